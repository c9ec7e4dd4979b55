"""Statements of one `PATCH /api/customers/{id}/assign` (issue 17). The preload's statement also asks the pool
cooldown's question (when did the assignee last lose this lead?), which still refuses a lead its assignee lost
within the cooldown; and whether the automatic transfer holds a backoff for the lead, so the deadline's refresh
looks for one (to drop it: it belonged to the previous tenure) only when there is one.

The counting is `test_assign_statement_count`'s: the server in this process, each request's statements
collected through a context variable by a `before_cursor_execute` listener on the app's engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from support.api import Api, ok
from support.databases import DATABASES
from support.statements import PerRequest, statements_per_request

from leadpush.leads.models import Customer
from leadpush.transfer.models import TransferBackoff

# With a transfer rule and an SLA rule in force, a lead of the pool given to a salesperson, or one salesperson's
# lead given to another. Before these folds: 10 and 9 from the pool, 8 and 7 from a person (sqlite, postgres).
BOUND = {"sqlite": 7, "postgres": 6}


@pytest.fixture(scope="module", params=DATABASES)
def counted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    kind = request.param
    with statements_per_request(kind, str(tmp_path_factory.mktemp(f"assign-pooled-{kind}"))) as (ctx, server, app):
        yield kind, ctx, server, app


def _rules(api: Api, admin: Any) -> None:
    rule = {"name": "3天", "condition": "no_follow_up_after_assign", "thresholdDays": 3, "action": "public_pool"}
    ok(api.client(admin).post("/api/auto-transfer/rules", json=rule), 201)
    ok(api.client(admin).post("/api/sla-rules", json={"name": "5分钟", "remindAfterMinutes": 5}), 201)


def _listing(seen: list[str]) -> str:
    return "\n".join(f"{i + 1:2}. {s[:300]}" for i, s in enumerate(seen))


def _assign(api: Api, app: PerRequest, who: Any, lead: int, to: int) -> tuple[Any, list[str]]:
    path = f"/api/customers/{lead}/assign"
    return app.during(f"PATCH {path}", lambda: api.client(who).patch(path, json={"assignedTo": to}))


def test_assign_pooled_lead_runs_no_statement_for_the_cooldown(counted: tuple) -> None:
    kind, ctx, server, app = counted
    api = Api(url=server.url, ctx=ctx)
    try:
        admin = api.user("管理员", "admin", None)
        manager = api.user("王经理", "manager", "A")
        alice = api.user("李丽", "sales", "A", wechat_openid="o-alice")
        bob = api.user("赵强", "sales", "A")
        _rules(api, admin)
        warm = api.lead(manager, name="预热", phone="13900000000")["id"]
        # The first assignment after a rule change, and the first to a person, may load what later ones find in
        # hand (the rules, the person's notification preferences).
        for to in (alice.id, bob.id):
            ok(_assign(api, app, manager, warm, to)[0])
        lead = api.lead(manager)["id"]
        assert ok(api.client(manager).get(f"/api/customers/{lead}"))["inPool"] is True

        r, seen = _assign(api, app, manager, lead, alice.id)
        listing = _listing(seen)
        print(f"\n{kind}: {len(seen)} statements for one assignment from the pool\n{listing}")
        data = ok(r)
        assert len(seen) <= BOUND[kind], f"{kind}: {len(seen)} statements (bound {BOUND[kind]}):\n{listing}"
        assert not any(s.startswith("SELECT assignments.") for s in seen), listing  # no read of the history
        assert data["ownerId"] == alice.id and data["inPool"] is False
        assert data["notificationData"]["toUserId"] == alice.id and data["notificationData"]["openid"] == "o-alice"

        # The cooldown still holds: alice gives the lead up, and may not be given it back until it has passed.
        ok(api.client(alice).post(f"/api/customers/{lead}/release", json={}))
        ctx.clock.advance(hours=1)
        r, _ = _assign(api, app, manager, lead, alice.id)
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "previous_owner_cooldown", r.text
        assert "李丽" in r.json()["message"] and "冷却期" in r.json()["message"]
        ctx.clock.advance(hours=ctx.settings.reclaim_cooldown_hours)
        r, _ = _assign(api, app, manager, lead, alice.id)
        assert ok(r)["ownerId"] == alice.id
    finally:
        api.close()


def test_assign_reassignment_reads_no_backoff_unless_there_is_one(counted: tuple) -> None:
    kind, ctx, server, app = counted
    api = Api(url=server.url, ctx=ctx)
    try:
        admin = api.user("管理员乙", "admin", None)
        manager = api.user("钱经理", "manager", "B")
        carol = api.user("孙红", "sales", "B", wechat_openid="o-carol")
        dave = api.user("周明", "sales", "B", wechat_openid="o-dave")
        _rules(api, admin)
        lead = api.lead(manager, name="李四", phone="13700137000", assignedTo=carol.id)["id"]
        ok(_assign(api, app, manager, lead, dave.id)[0])  # the first one may load the rules, the preferences
        ctx.clock.advance(seconds=20)

        r, seen = _assign(api, app, manager, lead, carol.id)
        listing = _listing(seen)
        print(f"\n{kind}: {len(seen)} statements for one reassignment\n{listing}")
        data = ok(r)
        assert len(seen) <= BOUND[kind], f"{kind}: {len(seen)} statements (bound {BOUND[kind]}):\n{listing}"
        assert not any(s.startswith("SELECT transfer_backoffs.") for s in seen), listing  # none to look for
        assert data["ownerId"] == carol.id and data["transferDueAt"] is not None and data["slaNextAt"] is not None

        # A backoff of carol's tenure (the transfer could not move the lead): giving the lead to dave drops it.
        with ctx.db.write() as session:
            now = ctx.clock.now()
            session.add(
                TransferBackoff(
                    customer_id=lead,
                    owner_id=carol.id,
                    assigned_at=session.get(Customer, lead).assigned_at,
                    rule_id=None,
                    failures=1,
                    reason="测试",
                    first_failed_at=now,
                    retry_at=now + timedelta(hours=1),
                )
            )
        ctx.clock.advance(seconds=20)
        data = ok(_assign(api, app, manager, lead, dave.id)[0])
        assert data["ownerId"] == dave.id and data["transferDueAt"] is not None
        with ctx.db.read() as session:
            assert session.get(TransferBackoff, lead) is None
    finally:
        api.close()
