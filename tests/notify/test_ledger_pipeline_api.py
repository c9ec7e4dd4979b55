"""Through the API on PostgreSQL: an assignment's notices are written by the pipelined last step (the lock, the
write and the COMMIT in one round trip), so at no point the request's thread has control is a recipient locked,
and the client sees what it always saw: the answer, both people's notifications in their inboxes, chained.

The server runs in this process (its engine's listeners see every statement it runs); whether a recipient lock
is held is read from pg_locks by a second connection at each of them, and at the commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from support.api import Api, ok
from support.databases import database_url
from support.servers import FakeClock, ServerThread, make_settings
from support.statements import listening

from leadpush.app import create_app
from leadpush.context import AppContext
from leadpush.migrate import upgrade


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    gen = database_url("postgres", str(tmp_path_factory.mktemp("ledgerpipe-api")))
    url = next(gen)
    upgrade(url)
    ctx = AppContext.from_settings(make_settings(url), clock=FakeClock())
    server = ServerThread(create_app(ctx, roles=frozenset({"api"})), ws_max_size=ctx.settings.ws_max_message_bytes)
    server.start()
    client = Api(url=server.url, ctx=ctx)
    try:
        yield client
    finally:
        client.close()
        server.stop()
        ctx.db.dispose()
        gen.close()


class HeldLocks:
    """At each statement the app's engine runs (before and after) and at each commit: does that connection's
    backend hold a recipient lock (the ledger's advisory locks, key 7301)? Read by a second connection."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.observer = psycopg.connect(
            ctx.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True
        )
        self.held_at: list[str] = []
        self.statements: list[str] = []

    def _check(self, conn: Any, where: str) -> None:
        pid = conn.connection.driver_connection.info.backend_pid
        row = self.observer.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 7301 AND pid = %s AND granted",
            [pid],
        ).fetchone()
        if row and row[0]:
            self.held_at.append(where)

    def before(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements.append(" ".join(statement.split())[:60])
        self._check(conn, "before " + self.statements[-1])

    def after(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self._check(conn, "after " + " ".join(statement.split())[:60])

    def commit(self, conn: Any) -> None:
        self._check(conn, "COMMIT")

    def __enter__(self) -> HeldLocks:
        self._listening = listening(
            self.ctx, before_cursor_execute=self.before, after_cursor_execute=self.after, commit=self.commit
        )
        self._listening.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._listening.__exit__(*exc)
        self.observer.close()


def test_pipeline_api_an_assignment_holds_no_recipient_lock_while_the_request_runs(api: Api) -> None:
    manager = api.user("王经理", "manager", "A")
    alice = api.user("李丽", "sales", "A")
    bob = api.user("赵强", "sales", "A")
    lead = api.lead(manager, assignedTo=alice.id)
    with HeldLocks(api.ctx) as locks:
        data = ok(api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": bob.id}))
    assert any("pg_advisory_xact_lock" in s for s in locks.statements), locks.statements
    assert locks.held_at == [], locks.held_at
    # What the client sees is as before: the answer, and each person's notice in their inbox.
    assert data["ownerId"] == bob.id and data["notificationData"]["toUserId"] == bob.id
    (to_bob,) = ok(api.client(bob).get("/api/notifications", params={"after": 0}))["items"]
    assert to_bob["type"] == "customer_assigned" and to_bob["id"] == data["notificationData"]["notificationId"]
    assert to_bob["data"]["customerId"] == lead["id"]
    alices = ok(api.client(alice).get("/api/notifications", params={"after": 0}))["items"]
    assert [n["type"] for n in alices][-1] == "customer_recycled"
    # And back: the next notices go on after these (ids rise; the lock was released at the commit).
    again = ok(api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": alice.id}))
    (to_alice,) = ok(api.client(alice).get("/api/notifications", params={"after": alices[-1]["id"]}))["items"]
    assert to_alice["id"] == again["notificationData"]["notificationId"] > to_bob["id"]
