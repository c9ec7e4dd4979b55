"""How many SQL statements one `PATCH /api/customers/{id}/assign` costs (issue 17: statements per assignment).

The server runs in this process; its app is wrapped so every request carries a list in a context variable
(copied into the threads the request uses), and a `before_cursor_execute` listener on the app's engine
appends each statement run for that request. Background work (the dispatcher, the hub, the scheduler) runs
outside any request and is not counted. The bound is the count after issue 17's cuts: an assignment that
needs more statements fails here with the list of what it ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support.api import Api, ok
from support.databases import DATABASES
from support.statements import PerRequest, statements_per_request

# A manager reassigns a lead of one salesperson to another (the benchmark's request): the owner, the history
# row, two notifications and their deliveries, with an enabled transfer rule and SLA rule in force.
# The token check reads nothing once this process holds a copy of the token's rows (leadpush.users.authcache):
# the copy is kept for the whole test here, so that a slow machine does not turn it into a timing test.
# The in-app deliveries are written sent with their one try (the commit pushes them): the worker has no
# transaction for them. The try takes no statement of its own: on PostgreSQL it is in the ledger's one
# statement, on SQLite the deliveries' INSERT writes it (the schema's trigger, migration 0012).
BOUND = {"sqlite": 7, "postgres": 6}


@pytest.fixture(scope="module", params=DATABASES)
def counted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    kind = request.param
    with statements_per_request(kind, str(tmp_path_factory.mktemp(f"stmts-{kind}"))) as (ctx, server, app):
        yield kind, ctx, server, app


def _assign_statements(api: Api, app: PerRequest, who: Any, lead: int, to: int) -> tuple[dict, list[str]]:
    path = f"/api/customers/{lead}/assign"
    r, seen = app.during(f"PATCH {path}", lambda: api.client(who).patch(path, json={"assignedTo": to}))
    return ok(r), seen


def test_one_assignment_runs_a_bounded_number_of_statements(counted: tuple) -> None:
    kind, ctx, server, app = counted
    api = Api(url=server.url, ctx=ctx)
    try:
        admin = api.user("管理员", "admin", None)
        manager = api.user("王经理", "manager", "A")
        alice = api.user("李丽", "sales", "A", wechat_openid="o-alice")
        bob = api.user("赵强", "sales", "A", wechat_openid="o-bob")
        ok(
            api.client(admin).post(
                "/api/auto-transfer/rules",
                json={
                    "name": "3天",
                    "condition": "no_follow_up_after_assign",
                    "thresholdDays": 3,
                    "action": "public_pool",
                },
            ),
            201,
        )
        ok(api.client(admin).post("/api/sla-rules", json={"name": "5分钟", "remindAfterMinutes": 5}), 201)
        lead = api.lead(manager, assignedTo=alice.id)["id"]
        # The first assignment after a rule change may load what later ones find in hand.
        _assign_statements(api, app, manager, lead, bob.id)
        ctx.clock.advance(seconds=20)  # a later assignment: new deadlines and a new SLA step time are written
        data, seen = _assign_statements(api, app, manager, lead, alice.id)
        listing = "\n".join(f"{i + 1:2}. {s[:300]}" for i, s in enumerate(seen))
        print(f"\n{kind}: {len(seen)} statements for one assignment\n{listing}")
        assert len(seen) <= BOUND[kind], f"{kind}: {len(seen)} statements (bound {BOUND[kind]}):\n{listing}"
        # The answer is built from what the request has in hand, and says what a fresh read says.
        assert data["ownerId"] == alice.id and data["ownerName"] == "李丽"
        assert data["transferDueAt"] is not None and data["slaNextAt"] is not None
        assert data["notificationData"]["toUserId"] == alice.id and data["notificationData"]["openid"] == "o-alice"
        fresh = ok(api.client(manager).get(f"/api/customers/{lead}"))
        for key in ("ownerId", "ownerName", "version", "assignedAt", "transferDueAt", "slaNextAt", "phone"):
            assert data[key] == fresh[key], key
    finally:
        api.close()
