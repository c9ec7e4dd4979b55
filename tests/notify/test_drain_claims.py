"""Draining a backlog of WeChat deliveries (issue 17: the drain regressed after issue 16's claim-time work).

With more due than the dispatcher can have in flight, every finished send used to wake the loop for a claim
of its own: ~1–2 deliveries a claim, and each claim runs the claim-time rules (expiry, quiet hours, digest
windows, folding: a dozen statements) whatever its size. The dispatcher now refills its free capacity in
batches (half of it at a time), so the claim-time rules run once for several sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import select, update
from support import DATABASES, Api, running_stack, wipe
from support.api import ok

import leadpush.notify.dispatcher as dispatcher_module
from leadpush.notify.channels.base import DeliveryJob, SendResult
from leadpush.notify.dispatcher import Dispatcher
from leadpush.notify.metrics import Metrics
from leadpush.notify.models import Delivery

API_ONLY = frozenset({"api"})  # no dispatcher of the server's own: the test runs its own
SENDS = 40
CONCURRENCY = 8


@pytest.fixture(params=DATABASES)
def api(request, tmp_path) -> Iterator[Api]:
    with running_stack(
        request.param,
        str(tmp_path),
        roles=API_ONLY,
        delivery_poll_interval=30,
        delivery_concurrency=CONCURRENCY,
        digest_window_wechat=0,
        digest_window_wecom=0,
    ) as (ctx, server):
        wipe(ctx)
        client = Api(url=server.url, ctx=ctx)
        try:
            yield client
        finally:
            client.close()


def wechat_backlog(api: Api, n: int) -> None:
    """`n` people, one lead assigned to each; each notice waits as a WeChat delivery (the in-app ones are
    out of the way: only the WeChat sends fill the capacity)."""
    manager = api.user("王经理", "manager", "A")
    people = [api.user(f"销售{i}", "sales", "A") for i in range(n)]
    for person in people:
        lead = api.lead(manager, name=f"客户{person.id}")
        ok(api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": person.id}))
    now = api.ctx.clock.now()
    with api.ctx.db.write() as session:
        inapp = list(
            session.scalars(select(Delivery).where(Delivery.channel == "inapp", Delivery.recipient_id != manager.id))
        )
        session.execute(update(Delivery).values(status="skipped"))
        session.add_all(
            Delivery(
                notification_id=d.notification_id,
                recipient_id=d.recipient_id,
                channel="wechat",
                status="pending",
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
            for d in inapp
        )


def rows_of(api: Api, channel: str) -> list[Delivery]:
    with api.ctx.db.read() as session:
        return list(session.scalars(select(Delivery).where(Delivery.channel == channel)))


class InstantChannel:
    """The in-app channel: answers at once."""

    name = "inapp"

    async def send(self, job: DeliveryJob) -> SendResult:
        return SendResult.sent()

    async def aclose(self) -> None:
        return None


class HeldChannel:
    """Stands in for WeChat: each send waits until the test lets it answer."""

    name = "wechat"

    def __init__(self) -> None:
        self.started: list[int] = []
        self.gates: dict[int, asyncio.Event] = {}

    async def send(self, job: DeliveryJob) -> SendResult:
        gate = self.gates.setdefault(job.delivery_id, asyncio.Event())
        self.started.append(job.delivery_id)
        await gate.wait()
        return SendResult.sent(provider_id=f"msg-{job.delivery_id}")

    def release(self, delivery_id: int) -> None:
        self.gates.setdefault(delivery_id, asyncio.Event()).set()

    async def aclose(self) -> None:
        return None


async def until(condition, timeout: float = 30.0) -> None:  # noqa: ANN001
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_backlog_is_claimed_in_batches_not_a_claim_per_finished_send(api, monkeypatch):
    wechat_backlog(api, SENDS)
    claims = 0
    real_claim = dispatcher_module.claim_batch

    def counted_claim(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        nonlocal claims
        # Only this test's dispatcher (no heartbeat: holder None), not the running stack's own worker.
        if args[4] is None:
            claims += 1
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(dispatcher_module, "claim_batch", counted_claim)
    channel = HeldChannel()
    finished = CONCURRENCY  # sends answered one after another, each recorded before the next answers

    async def sent_count() -> int:
        rows = await asyncio.to_thread(rows_of, api, "wechat")
        return sum(d.status == "sent" for d in rows)

    async def main() -> int:
        dispatcher = Dispatcher(api.ctx, {"wechat": channel, "inapp": InstantChannel()}, Metrics())
        task = asyncio.create_task(dispatcher.run())
        try:
            await until(lambda: asyncio.sleep(0, len(channel.started) == CONCURRENCY))
            before = claims
            for n, delivery_id in enumerate(list(channel.started[:finished]), start=1):
                channel.release(delivery_id)
                await until(lambda n=n: _at_least(sent_count(), n))
            # Capacity refilled: as many sends started again as finished.
            await until(lambda: asyncio.sleep(0, len(channel.started) == CONCURRENCY + finished))
            return claims - before
        finally:
            for delivery_id in channel.started:
                channel.release(delivery_id)
            await dispatcher.stop()
            task.cancel()

    refills = asyncio.run(main())
    rows = {d.id: d for d in rows_of(api, "wechat")}
    # What the person sees: each notice once; the answered ones recorded as sent.
    assert len(set(channel.started)) == len(channel.started)
    assert all(rows[i].status == "sent" and rows[i].attempts == 1 for i in channel.started[:finished])
    # The capacity freed one send at a time was refilled in batches (half the capacity a claim on SQLite, a
    # quarter on PostgreSQL), not by a claim per finished send (it was one each: CONCURRENCY claims here).
    # On a loaded machine a claim the settle timer makes may fall between two answers: allow one more.
    batch = CONCURRENCY // (2 if api.ctx.db.is_sqlite else 4)
    assert refills <= finished // batch + 2 and refills < finished, f"{refills} claims to refill {finished} sends"


async def _at_least(count, n: int) -> bool:  # noqa: ANN001
    return await count >= n
