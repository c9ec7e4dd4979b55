"""The worker is woken only by commits that leave it something to send.

An assignment whose recipients have only in-app is delivered by the commit itself (the api process pushes it
and writes the in-app row sent: notify/ledger.py), so the worker has nothing to claim for it: waking it cost a
claim transaction that found nothing (issue 17: 3.4 ms of the worker's CPU per assignment). An assignment to
someone with WeCom (or WeChat, a webhook) bound still wakes it at once: the message goes out as promptly as
before, not at the worker's next poll (made a minute long here, so only a wake-up can explain a prompt send).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from support import DATABASES, REDIS_URL, Api, Person, ok, require_redis, wait_for
from support.buses import bus_pair, running, until
from support.channels import FakeWeChatServer, leadpush_against, strict_state

from leadpush.notify.models import Delivery, Notification
from leadpush.notify.signals import Wake

POLL = 60.0  # the worker's poll: far longer than any test here waits


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeWeChatServer]:
    with FakeWeChatServer(strict_state()) as server:
        yield server


@pytest.fixture(params=DATABASES)
def slow_poll(request: pytest.FixtureRequest, fake: FakeWeChatServer, tmp_path) -> Iterator[Api]:
    """leadpush (api + worker + scheduler) whose worker polls once a minute: it sends promptly only when woken."""
    fake.state.reset(full=True)
    with leadpush_against(fake, request.param, str(tmp_path), delivery_poll_interval=POLL) as (ctx, server):
        api = Api(url=server.url, ctx=ctx)
        try:
            yield api
        finally:
            api.close()


def claims(api: Api) -> float:
    """The worker's claim transactions so far, as /metrics counts them."""
    for line in httpx.get(api.url + "/metrics").text.splitlines():
        if line.startswith("leadpush_delivery_claims_total "):
            return float(line.split()[1])
    raise AssertionError("leadpush_delivery_claims_total is not on /metrics")


def assign_new_lead(api: Api, manager: Person, to: Person, name: str, phone: str) -> int:
    lead = api.lead(manager, name=name, phone=phone)
    ok(api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": to.id}))
    return int(lead["id"])


def wecom_sent(api: Api, who: Person) -> int:
    """How many of `who`'s WeCom deliveries the ledger says were sent."""
    with api.ctx.db.read() as session:
        rows = session.scalars(
            select(Delivery.status)
            .join(Notification, Notification.id == Delivery.notification_id)
            .where(Notification.recipient_id == who.id, Delivery.channel == "wecom")
        ).all()
    return sum(s == "sent" for s in rows)


def test_wakeneed_inapp_only_assignments_cost_the_worker_no_claim_and_wecom_still_goes_at_once(
    slow_poll: Api, fake: FakeWeChatServer
) -> None:
    api = slow_poll
    manager = api.user("王经理", "manager", "A")
    alice = api.user("李丽", "sales", "A")  # in-app only
    eve = api.user("吴敏", "sales", "A", wecom_userid="eve")  # WeCom bound
    # A first WeCom message: the worker is woken, sends it, records it; then it has nothing left to do.
    assign_new_lead(api, manager, eve, "探针", "13800138000")
    wait_for(lambda: len(fake.state.get_messages("wecom")) == 1, timeout=10)
    wait_for(lambda: wecom_sent(api, eve) == 1)
    before = claims(api)

    for i in range(5):
        assign_new_lead(api, manager, alice, f"客户{i}", f"1390000000{i}")
    # Each reached alice as sent by its commit (nothing waits for the worker).
    with api.ctx.db.read() as session:
        statuses = session.scalars(
            select(Delivery.status)
            .join(Notification, Notification.id == Delivery.notification_id)
            .where(Notification.recipient_id == alice.id)
        ).all()
    assert statuses and set(statuses) == {"sent"}

    # An assignment to eve wakes the worker: her WeCom message arrives well within the (minute-long) poll.
    started = time.monotonic()
    assign_new_lead(api, manager, eve, "赵六", "13700137000")
    [_, card] = wait_for(lambda: len(m := fake.state.get_messages("wecom")) == 2 and m, timeout=10)
    assert card["body"]["touser"] == "eve"
    assert time.monotonic() - started < POLL / 4
    wait_for(lambda: wecom_sent(api, eve) == 2)
    # ... and that one claim is all the worker ran since the first message: alice's five woke nobody.
    assert claims(api) - before == 1


def test_wakeneed_the_wake_message_says_whom_it_is_for():
    """Across processes (Redis): a commit that leaves no deliveries does not wake a worker, a commit that
    wrote deadlines carries the earliest to the schedulers; a message without these fields (an older
    process) wakes everyone, as before."""
    require_redis(REDIS_URL)
    soon = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)

    async def scenario() -> tuple[list[Any], list[Any]]:
        sender, receiver = bus_pair()
        heard: list[Any] = []
        own: list[Any] = []
        receiver.on_wake(lambda: heard.append("worker"))
        receiver.on_deadlines(lambda at: heard.append(("scheduler", at)))
        sender.on_wake(lambda: own.append("worker"))
        sender.on_deadlines(lambda at: own.append(("scheduler", at)))
        async with running(sender, receiver):
            heard.clear()  # the wake-ups of the connects
            own.clear()
            await sender.publish_hints_and_wake({1}, (), Wake(deliveries=False, deadlines=False))
            await sender.publish_hints_and_wake({1}, (), Wake(deliveries=False, deadlines=True, earliest=soon))
            await until(lambda: len(heard) >= 1)
            await sender.publish_hints_and_wake({1}, (), Wake(deliveries=True, deadlines=False))
            await until(lambda: len(heard) >= 2)
            await sender._publish(sender.wake_channel, {"from": "an-older-process"})
            await until(lambda: len(heard) >= 4)
        return heard, own

    heard, own = asyncio.run(scenario())
    assert heard == [("scheduler", soon), "worker", "worker", ("scheduler", None)]
    # This process's own worker and scheduler are woken directly, by the same rule (then hear the older one's).
    assert own[:2] == [("scheduler", soon), "worker"]


def test_wakeneed_a_process_hears_only_the_channels_it_has_handlers_for():
    """A worker or scheduler process (no sockets, no sign-ins to recheck) does not subscribe to the hint,
    in-app and sign-in channels: every commit's hint (with the notifications as pushed) cost each of them a
    message to read and parse, some 0.2 ms of CPU per assignment apiece. An api process hears those three and
    no wake-ups. Read from Redis's own count of subscribers per channel."""
    require_redis(REDIS_URL)

    async def scenario() -> tuple[dict[str, int], dict[str, int]]:
        worker, api = bus_pair()
        worker.on_wake(lambda: None)
        worker.on_deadlines(lambda _at: None)
        api.on_inapp(lambda _uid, _message: None)
        api.on_resync(lambda: None)
        api.on_auth(lambda _ids: None)
        channels = [worker.hints_channel, worker.inapp_channel, worker.auth_channel, worker.wake_channel]
        async with running(worker):
            alone = dict(await worker._redis.pubsub_numsub(*channels))
        async with running(api):
            beside = dict(await api._redis.pubsub_numsub(*channels))
        names = {c.encode(): c.rsplit(":", 1)[1] for c in channels}
        return {names[k]: v for k, v in alone.items()}, {names[k]: v for k, v in beside.items()}

    worker_hears, api_hears = asyncio.run(scenario())
    assert worker_hears == {"hints": 0, "inapp": 0, "auth": 0, "wake": 1}
    assert api_hears == {"hints": 1, "inapp": 1, "auth": 1, "wake": 0}
