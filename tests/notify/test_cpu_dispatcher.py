"""The dispatcher's cost per delivery (issue 17): deliveries that finish together are recorded in one write
transaction, and a claim that left capacity free is not followed by another claim when a job finishes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import event, select, update
from support import DATABASES, Api, inapp_left_to_the_worker, running_stack, wipe
from support.api import ok

import leadpush.notify.dispatcher as dispatcher_module
from leadpush.notify.channels.base import DeliveryJob, SendResult
from leadpush.notify.dispatcher import Dispatcher, claim_due_deliveries, record_outcomes
from leadpush.notify.metrics import Metrics
from leadpush.notify.models import Delivery, DeliveryAttempt

API_ONLY = frozenset({"api"})  # no dispatcher of the server's own: the test runs (or stands in for) it


@pytest.fixture(params=DATABASES)
def api(request, tmp_path) -> Iterator[Api]:
    with running_stack(request.param, str(tmp_path), roles=API_ONLY, delivery_poll_interval=30) as (ctx, server):
        wipe(ctx)
        client = Api(url=server.url, ctx=ctx)
        try:
            with inapp_left_to_the_worker(ctx):  # the test's own dispatcher sends them
                yield client
        finally:
            client.close()


def assign_some(api: Api, n: int) -> None:
    manager = api.user("王经理", "manager", "A")
    people = [api.user(f"销售{i}", "sales", "A") for i in range(n)]
    for person in people:
        lead = api.lead(manager, name=f"客户{person.id}")
        ok(api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": person.id}))


def inapp_rows(api: Api) -> list[Delivery]:
    with api.ctx.db.read() as session:
        return list(session.scalars(select(Delivery).where(Delivery.channel == "inapp").order_by(Delivery.id)))


def attempts(api: Api) -> list[DeliveryAttempt]:
    with api.ctx.db.read() as session:
        return list(session.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.delivery_id)))


class Commits:
    """Counts the commits of the context's engine while in use."""

    def __init__(self, api: Api) -> None:
        self.engine = api.ctx.db.engine
        self.count = 0

    def _on_commit(self, _conn: object) -> None:
        self.count += 1

    def __enter__(self) -> Commits:
        event.listen(self.engine, "commit", self._on_commit)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "commit", self._on_commit)


def test_outcomes_of_several_jobs_are_recorded_in_one_transaction_each_fenced(api):
    assign_some(api, 4)
    now = api.ctx.clock.now()
    jobs = [j for j in claim_due_deliveries(api.ctx.db, now, 60, 10, "w-old") if j.channel == "inapp"]
    assert len(jobs) == 4
    # The last job's claim is taken over by another worker (its lease ran out): its answer belongs to nobody.
    with api.ctx.db.write() as session:
        session.execute(
            update(Delivery).where(Delivery.id == jobs[-1].delivery_id).values(lease_until=now - timedelta(seconds=1))
        )
    later = now + timedelta(seconds=1)
    [taken] = claim_due_deliveries(api.ctx.db, later, 60, 10, "w-new")
    assert taken.delivery_id == jobs[-1].delivery_id
    results = [SendResult.sent()] * 4
    with Commits(api) as commits:
        statuses = record_outcomes(api.ctx, list(zip(jobs, results, strict=True)), later)
    assert commits.count == 1
    assert statuses == ["sent", "sent", "sent", "lost"]
    rows = {d.id: d for d in inapp_rows(api)}
    for job in jobs[:3]:
        assert rows[job.delivery_id].status == "sent" and rows[job.delivery_id].sent_at is not None
        assert rows[job.delivery_id].lease_until is None
    assert rows[taken.delivery_id].status == "sending" and rows[taken.delivery_id].lease_holder == "w-new"
    history = attempts(api)
    assert sorted(a.delivery_id for a in history) == sorted(j.delivery_id for j in jobs[:3])
    assert all(a.outcome == "sent" and a.status == "sent" and a.worker == "w-old" for a in history)
    # The new holder's answer is still recorded as usual.
    assert record_outcomes(api.ctx, [(taken, SendResult.retry("发布失败：ConnectionError"))], later) == ["failed"]


class InstantChannel:
    """An in-app channel that answers at once."""

    name = "inapp"

    def __init__(self) -> None:
        self.sent: list[int] = []

    async def send(self, job: DeliveryJob) -> SendResult:
        self.sent.append(job.delivery_id)
        return SendResult.sent()

    async def aclose(self) -> None:
        return None


def run_dispatcher(api: Api, channel: InstantChannel, expected: int, monkeypatch) -> tuple[int, int]:
    """Run a dispatcher until `expected` in-app deliveries are sent; count its claims and record transactions."""
    return run_dispatcher_until(
        api, channel, monkeypatch, lambda rows: len(rows) == expected and all(d.status == "sent" for d in rows)
    )


def run_dispatcher_until(api: Api, channel: InstantChannel, monkeypatch, done) -> tuple[int, int]:  # noqa: ANN001
    """Run a dispatcher until `done(in-app rows)`; count its claims and record transactions."""
    claims = records = 0
    real_claim, real_record = dispatcher_module.claim_batch, dispatcher_module.record_outcomes

    def counted_claim(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        nonlocal claims
        claims += 1
        return real_claim(*args, **kwargs)

    def counted_record(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        nonlocal records
        records += 1
        return real_record(*args, **kwargs)

    monkeypatch.setattr(dispatcher_module, "claim_batch", counted_claim)
    monkeypatch.setattr(dispatcher_module, "record_outcomes", counted_record)

    async def main() -> None:
        dispatcher = Dispatcher(api.ctx, {"inapp": channel}, Metrics())
        task = asyncio.create_task(dispatcher.run())
        for _ in range(400):
            if done(await asyncio.to_thread(inapp_rows, api)):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # anything it would still do after the last outcome
        await dispatcher.stop()
        task.cancel()

    asyncio.run(main())
    return claims, records


def test_sent_inapp_deliveries_are_recorded_by_the_next_claim_and_not_claimed_again(api, monkeypatch):
    assign_some(api, 5)
    channel = InstantChannel()
    claims, records = run_dispatcher(api, channel, 5, monkeypatch)
    assert sorted(channel.sent) == sorted(d.id for d in inapp_rows(api))
    assert all(d.status == "sent" and d.lease_until is None for d in inapp_rows(api))
    history = attempts(api)
    assert len(history) == 5 and all(a.outcome == "sent" and a.status == "sent" for a in history)
    # One claim took all five (capacity left over: nothing more was due); the claim the loop made within
    # SETTLE_WITHIN recorded them — none of them in a record transaction of its own. On a busy machine a send
    # that finishes after that claim started waits for the next one (three claims): still not one per delivery.
    assert records == 0
    assert claims >= 2  # how many more depends on the machine: the records above are the point


class FailingChannel(InstantChannel):
    """A webhook-like channel whose sends fail (a retry): recorded at once, on their own."""

    name = "webhook"

    async def send(self, job: DeliveryJob) -> SendResult:
        self.sent.append(job.delivery_id)
        return SendResult.retry("503")


def test_outcomes_other_than_a_sent_inapp_are_recorded_at_once(api, monkeypatch):
    assign_some(api, 3)
    channel = FailingChannel()
    channel.name = "inapp"  # stands in for the in-app channel, failing: a retry is not left for the next claim
    claims, records = run_dispatcher_until(
        api, channel, monkeypatch, lambda rows: all(d.status == "failed" for d in rows)
    )
    assert records >= 1
    assert all(d.status == "failed" and d.attempts == 1 for d in inapp_rows(api))
