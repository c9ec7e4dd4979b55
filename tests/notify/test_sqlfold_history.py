"""The first-contact times of an ownership go in with its history row (issue 17: statements per assignment):
by when the SLA rule wants the lead opened (`open_due_at`), and `opened_at` for a lead its new owner took
themselves. A batch writes one row per lead, each with its own times."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from support import ok

from leadpush.assignment.models import Assignment


def test_sqlfold_a_batch_writes_each_rows_first_contact_times(api, team) -> None:
    ok(api.client(team.admin).post("/api/sla-rules", json={"name": "5分钟", "remindAfterMinutes": 5}), 201)
    leads = [api.lead(team.manager, name=f"客户{i}")["id"] for i in range(3)]
    now = api.ctx.clock.now()
    ok(
        api.client(team.manager).post(
            "/api/customers/batch-assign", json={"customerIds": leads, "assignedTo": team.alice.id}
        )
    )
    mine = api.lead(team.manager, name="自己留")["id"]
    ok(api.client(team.manager).patch(f"/api/customers/{mine}/assign", json={"assignedTo": team.manager.id}))
    with api.ctx.db.read() as session:
        rows = {r.customer_id: r for r in session.scalars(select(Assignment).where(Assignment.to_user_id.is_not(None)))}
    assert sorted(rows) == sorted([*leads, mine])
    for lead in leads:  # each row of the batch: due five minutes after the move, not opened
        assert (rows[lead].open_due_at, rows[lead].opened_at) == (now + timedelta(minutes=5), None)
    # The manager kept one themselves: opened at once, no ladder.
    assert (rows[mine].open_due_at, rows[mine].opened_at) == (None, now)
