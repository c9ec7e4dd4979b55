"""The scheduler is woken only by commits that may have made its next wake-up earlier.

Between runs it sleeps until the earliest stored deadline (transfer deadline or warning, first-contact step,
follow-up reminder) or the next cron hour. An assignment writes the lead's deadlines in its transaction and
says, with its commit, the earliest it wrote: the scheduler re-reads only if that comes before what it is
waiting for. Every assignment made it re-read the ledger before (throttled to READ_INTERVAL), for deadlines
hours away.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from support import DATABASES, Api, FakeClock, Person, ok, running_stack, wait_for

from leadpush.transfer.scheduler import MAX_SLEEP, TransferScheduler

# One minute past an hour: the next cron run is 59 minutes away.
START = datetime.now(UTC).replace(minute=1, second=0, microsecond=0)


@pytest.fixture(params=DATABASES)
def timed(request: pytest.FixtureRequest, tmp_path) -> Iterator[tuple[Api, TransferScheduler]]:
    with running_stack(request.param, str(tmp_path), clock=FakeClock(START)) as (ctx, server):
        api = Api(url=server.url, ctx=ctx)
        scheduler = server.server.config.app.state.runtime.scheduler
        try:
            yield api, scheduler
        finally:
            api.close()


def assign_new_lead(api: Api, admin: Person, to: Person, name: str, phone: str) -> None:
    lead = api.lead(admin, name=name, phone=phone)
    ok(api.client(admin).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": to.id}))


def test_wakeneed_a_later_deadline_does_not_make_the_scheduler_read_an_earlier_one_does_at_once(
    timed: tuple[Api, TransferScheduler],
) -> None:
    api, scheduler = timed
    admin = api.user("管理员", "admin", None)
    alice = api.user("李丽", "sales", "A")
    bob = api.user("赵强", "sales", "B")
    # Team A's leads are due to be contacted in two hours (after the next cron run), team B's in five minutes.
    rule = {"remindAfterMinutes": 120}
    ok(api.client(admin).post("/api/sla-rules", json={"name": "两小时", "team": "A", **rule}), 201)
    ok(api.client(admin).post("/api/sla-rules", json={"name": "五分钟", "team": "B", "remindAfterMinutes": 5}), 201)
    next_cron = START + timedelta(minutes=59)
    wait_for(lambda: scheduler.planned == next_cron)  # its first look: nothing stored, the cron hour next
    before = scheduler.reads

    for i in range(4):
        assign_new_lead(api, admin, alice, f"客户{i}", f"1390000000{i}")
    assign_new_lead(api, admin, bob, "赵六", "13700137000")

    # Bob's step is before the cron hour: the scheduler read it at once (not at its MAX_SLEEP re-read) ...
    wait_for(lambda: scheduler.planned == START + timedelta(minutes=5), timeout=MAX_SLEEP / 3)
    # ... and that was its only read: alice's four leads (due after the cron hour) woke it for nothing.
    assert scheduler.reads - before == 1
