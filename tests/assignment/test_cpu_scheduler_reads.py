"""The scheduler's look at the ledger after commits (issue 17): the earliest transfer deadline or warning, ladder
step and follow-up reminder, read in one statement, and the same moments the three separate reads give."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, update
from support import DATABASES, Api, running_stack, wipe

from leadpush.leads.models import Customer
from leadpush.leads.reminders import earliest_reminder
from leadpush.sla.engine import earliest_step
from leadpush.transfer.deadlines import earliest_pending
from leadpush.transfer.scheduler import earliest_moments

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


@pytest.fixture(params=DATABASES)
def api(request, tmp_path) -> Iterator[Api]:
    with running_stack(request.param, str(tmp_path), roles=frozenset({"api"})) as (ctx, server):
        wipe(ctx)
        client = Api(url=server.url, ctx=ctx)
        try:
            yield client
        finally:
            client.close()


def separately(api: Api):  # noqa: ANN201
    with api.ctx.db.read() as session:
        return earliest_pending(session), earliest_step(session), earliest_reminder(session)


def together(api: Api):  # noqa: ANN201
    statements: list[str] = []

    def seen(_c, _cur, statement, *_):  # noqa: ANN001, ANN002, ANN202
        statements.append(statement)

    event.listen(api.ctx.db.engine, "before_cursor_execute", seen)
    try:
        with api.ctx.db.read() as session:
            found = earliest_moments(session)
    finally:
        event.remove(api.ctx.db.engine, "before_cursor_execute", seen)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1
    return found


def set_lead(api: Api, lead_id: int, **values: object) -> None:
    with api.ctx.db.write() as session:
        session.execute(update(Customer).where(Customer.id == lead_id).values(**values))


def test_nothing_pending(api):
    assert together(api) == separately(api) == (None, None, None)


def test_the_same_moments_as_the_separate_reads(api):
    manager = api.user("王经理", "manager", "A")
    alice = api.user("李丽", "sales", "A")
    leads = [api.lead(manager, name=f"客户{i}", phone=f"1380013800{i}")["id"] for i in range(5)]
    # Owned leads with deadlines; a warning already given for its deadline does not count, one given for an
    # earlier deadline does; a pooled lead's deadline does not count; an opened lead's ladder step does not.
    set_lead(api, leads[0], owner_id=alice.id, transfer_due_at=T0 + timedelta(hours=5))
    set_lead(
        api,
        leads[1],
        owner_id=alice.id,
        transfer_due_at=T0 + timedelta(hours=6),
        transfer_warn_at=T0 + timedelta(hours=1),
        transfer_warned_for=T0 + timedelta(hours=6),
    )
    set_lead(
        api, leads[2], owner_id=None, transfer_due_at=T0, sla_next_at=T0, follow_up_remind_at=T0 + timedelta(hours=9)
    )
    set_lead(api, leads[3], owner_id=alice.id, sla_next_at=T0 + timedelta(hours=2), opened_at=T0)
    set_lead(api, leads[4], owner_id=alice.id, sla_next_at=T0 + timedelta(hours=3))
    expected = (T0 + timedelta(hours=5), T0 + timedelta(hours=3), T0 + timedelta(hours=9))
    assert separately(api) == expected
    assert together(api) == expected
    set_lead(
        api,
        leads[1],
        transfer_warned_for=T0 + timedelta(hours=4),  # warned for an earlier deadline: to be warned again
    )
    assert separately(api)[0] == T0 + timedelta(hours=1)
    assert together(api) == separately(api)
