"""Each process keeps a copy of the enabled transfer and SLA rules (leadpush.rulecache): a change applies at once
in the process that makes it, and within LEADPUSH_RULE_CACHE_SECONDS in every other one."""

from __future__ import annotations

import time

from sqlalchemy import text
from support.api import ok
from support.servers import make_settings
from support.waiting import wait_for

from leadpush.context import AppContext
from leadpush.sla.progress import rules_in_force as sla_rules_in_force
from leadpush.transfer.deadlines import rules_in_force

RULE = {"name": "3天", "condition": "no_follow_up_after_assign", "thresholdDays": 3, "action": "public_pool"}


def test_a_rule_change_applies_to_the_next_assignment_in_the_same_process(api, team) -> None:
    admin, manager = api.client(team.admin), api.client(team.manager)
    lead = api.lead(team.manager, assignedTo=team.alice.id)["id"]
    first = ok(manager.patch(f"/api/customers/{lead}/assign", json={"assignedTo": team.bob.id}))
    assert first["transferDueAt"] is None and first["slaNextAt"] is None  # no rules yet (and now in the copy)

    rule = ok(admin.post("/api/auto-transfer/rules", json=RULE), 201)
    ok(admin.post("/api/sla-rules", json={"name": "5分钟", "remindAfterMinutes": 5}), 201)
    second = ok(manager.patch(f"/api/customers/{lead}/assign", json={"assignedTo": team.alice.id}))
    assert second["transferDueAt"] is not None and second["slaNextAt"] is not None

    ok(admin.patch(f"/api/auto-transfer/rules/{rule['id']}", json={"enabled": False}))
    third = ok(manager.patch(f"/api/customers/{lead}/assign", json={"assignedTo": team.bob.id}))
    assert third["transferDueAt"] is None and third["slaNextAt"] is not None


def test_another_process_sees_a_rule_change_within_its_cache_time(api, team) -> None:
    ttl = 1.0
    other = AppContext.from_settings(make_settings(api.ctx.settings.database_url, rule_cache_seconds=ttl))
    try:
        with other.db.write() as session:
            assert rules_in_force(session) == [] and sla_rules_in_force(session) == []  # copied: no rules

        ok(api.client(team.admin).post("/api/auto-transfer/rules", json=RULE), 201)
        ok(api.client(team.admin).post("/api/sla-rules", json={"name": "5分钟", "remindAfterMinutes": 5}), 201)
        saved = time.monotonic()

        def seen_by_other() -> bool:
            with other.db.write() as session:
                return len(rules_in_force(session)) == 1 and len(sla_rules_in_force(session)) == 1

        wait_for(seen_by_other, timeout=ttl + 10)
        # Within the cache time (and the load of a busy machine), not at some later reload.
        assert time.monotonic() - saved <= ttl + 2.0

        # A change the other process makes itself, even by hand, applies there at once.
        with other.db.write() as session:
            session.execute(text("UPDATE transfer_rules SET enabled = false"))
        with other.db.write() as session:
            assert rules_in_force(session) == []
            [copy] = sla_rules_in_force(session)
            assert copy.name == "5分钟" and copy.remind_after_minutes == 5
    finally:
        other.db.dispose()


def test_without_a_cache_time_every_read_goes_to_the_database(api, team) -> None:
    other = AppContext.from_settings(make_settings(api.ctx.settings.database_url, rule_cache_seconds=0))
    try:
        with other.db.write() as session:
            assert rules_in_force(session) == []
        ok(api.client(team.admin).post("/api/auto-transfer/rules", json=RULE), 201)
        with other.db.write() as session:
            assert [r.name for r in rules_in_force(session)] == ["3天"]
    finally:
        other.db.dispose()
