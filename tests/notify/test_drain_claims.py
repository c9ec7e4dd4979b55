"""Draining a backlog of WeChat deliveries (issue 17: the drain regressed after issue 16's claim-time work).

With more due than the dispatcher can have in flight, every finished send used to wake the loop for a claim
of its own: ~1–2 deliveries a claim, and each claim runs the claim-time rules (expiry, quiet hours, digest
windows, folding: a dozen statements) whatever its size. The dispatcher now refills its free capacity in
batches, so a backlog costs a claim per several sends, and the statements per sent delivery stay few.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from collections.abc import Iterator

import pytest
from anyio import to_thread
from sqlalchemy import event, select, update
from support import DATABASES, Api, running_stack, wipe
from support.api import ok

import leadpush.notify.dispatcher as dispatcher_module
from leadpush.notify.channels.base import DeliveryJob, SendResult
from leadpush.notify.dispatcher import Dispatcher
from leadpush.notify.metrics import Metrics
from leadpush.notify.models import Delivery

API_ONLY = frozenset({"api"})  # no dispatcher of the server's own: the test runs its own
SENDS = 64
CONCURRENCY = 16


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
    """`n` people, one lead assigned to each; each notice waits as an in-app and a WeChat delivery (as in
    the channels benchmark's drain)."""
    manager = api.user("王经理", "manager", "A")
    people = [api.user(f"销售{i}", "sales", "A") for i in range(n)]
    for person in people:
        lead = api.lead(manager, name=f"客户{person.id}")
        ok(api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": person.id}))
    now = api.ctx.clock.now()
    with api.ctx.db.write() as session:
        session.execute(update(Delivery).where(Delivery.channel != "inapp").values(status="skipped"))
        inapp = list(
            session.scalars(select(Delivery).where(Delivery.channel == "inapp", Delivery.recipient_id != manager.id))
        )
        # Due in pairs, as a batch assignment leaves them: each notice's in-app delivery, then its WeChat one.
        for k, d in enumerate(sorted(inapp, key=lambda d: d.id)):
            due = now - timedelta(seconds=len(inapp) - k)
            d.next_attempt_at = due
            session.add(
                Delivery(
                    notification_id=d.notification_id,
                    recipient_id=d.recipient_id,
                    channel="wechat",
                    status="pending",
                    next_attempt_at=due,
                    created_at=now,
                    updated_at=now,
                )
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


class StaggeredChannel:
    """Stands in for WeChat: each send takes a little while, and they finish one after another."""

    name = "wechat"

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.started = 0

    async def send(self, job: DeliveryJob) -> SendResult:
        # A few steps in threads around the HTTP call, as the WeChat channel takes; sends end 10 ms apart.
        self.started += 1
        await to_thread.run_sync(time.sleep, 0.001)
        await asyncio.sleep(0.01 * (self.started % CONCURRENCY + 1))
        self.sent.append(job.delivery_id)
        return SendResult.sent(provider_id=f"msg-{job.delivery_id}")

    async def aclose(self) -> None:
        return None


def test_a_backlog_is_claimed_in_batches_not_a_claim_per_finished_send(api, monkeypatch):
    wechat_backlog(api, SENDS)
    assert len(rows_of(api, "wechat")) == SENDS
    claims = 0
    real_claim = dispatcher_module.claim_batch

    def counted_claim(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        nonlocal claims
        claims += 1
        r = real_claim(*args, **kwargs)
        print("claim", args[4], len(r.jobs), r.full)
        return r

    monkeypatch.setattr(dispatcher_module, "claim_batch", counted_claim)
    statements: list[str] = []

    def count(_conn, _cursor, statement, _params, _context, _many) -> None:  # noqa: ANN001
        statements.append(statement)

    channel = StaggeredChannel()

    async def main() -> None:
        dispatcher = Dispatcher(api.ctx, {"wechat": channel, "inapp": InstantChannel()}, Metrics())
        event.listen(api.ctx.db.engine, "before_cursor_execute", count)
        task = asyncio.create_task(dispatcher.run())
        try:
            for _ in range(1500):
                rows = await asyncio.to_thread(rows_of, api, "wechat")
                rows += await asyncio.to_thread(rows_of, api, "inapp")
                if all(d.status == "sent" for d in rows):
                    break
                await asyncio.sleep(0.02)
        finally:
            await dispatcher.stop()
            task.cancel()
            event.remove(api.ctx.db.engine, "before_cursor_execute", count)

    asyncio.run(main())
    rows = rows_of(api, "wechat")
    # What the person sees: every notice once, each delivery recorded as sent.
    assert sorted(channel.sent) == sorted(d.id for d in rows)
    assert all(d.status == "sent" and d.attempts == 1 for d in rows)
    assert all(d.status == "sent" for d in rows_of(api, "inapp"))
    # Refilled in batches: at most one claim per 3 sends (it was 1–2 sends a claim), so that the claim-time
    # rules' statements are shared; counted with the record transactions, a few statements per send.
    print("CLAIMS", claims, len(statements))
    assert claims <= 2 * SENDS // 3, f"{claims} claims for {2 * SENDS} sends"
    per_send = len(statements) / (2 * SENDS)
    assert per_send <= 5, f"{per_send:.1f} statements per send ({len(statements)})"
