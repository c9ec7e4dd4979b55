"""On PostgreSQL the ledger's last step, the recipients' lock, the write and the COMMIT go to the server as ONE
client round trip (psycopg's pipeline mode; issue 17, the lock convoy): the per-recipient lock is never held
while the client has control, and any error on the way rolls everything back and surfaces as before.

Round trips are counted from libpq's own protocol trace of the connection (one ReadyForQuery per round trip);
whether the lock is held is read from pg_locks by a second connection at every point the client runs a
statement or commits. Waits are on conditions, each bounded; nothing sleeps to guess at timing.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import psycopg
import pytest
from sqlalchemy import Table, event, exc, insert, select, text, update
from sqlalchemy.orm import Session
from support import DATABASES, wipe
from support.servers import bare_context

from leadpush.assignment.models import Assignment
from leadpush.context import AppContext
from leadpush.db import after_commit, before_commit
from leadpush.leads.models import Customer
from leadpush.notify.ledger import NewNotification, insert_at_last_step, write_notifications, write_prepared
from leadpush.notify.models import Delivery, Notification
from leadpush.notify.signals import Signals
from leadpush.users.models import User

WAIT = 10.0  # seconds: the bound on every wait (the machine is shared and may be slow)
BOOM = "触发器拒绝"  # a title the test trigger refuses


@pytest.fixture(scope="module", params=DATABASES)
def ctx(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppContext]:
    with bare_context(request.param, str(tmp_path_factory.mktemp(f"ledgerpipe-{request.param}"))) as context:
        yield context


@pytest.fixture
def db(ctx: AppContext) -> AppContext:
    wipe(ctx)
    return ctx


def postgres_only(ctx: AppContext) -> None:
    if not ctx.db.is_postgres:
        pytest.skip("SQLite has no recipient lock and no pipeline: its writers are serialised")


def raw_url(ctx: AppContext) -> str:
    """The test database's URL as psycopg takes it (for a second, independent connection)."""
    return ctx.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def people(ctx: AppContext, *names: str) -> list[User]:
    with ctx.db.write() as session:
        users = [User(name=n, role="sales", active=True, wechat_openid=f"o-{n}") for n in names]
        session.add_all(users)
    return users


def item(recipient: User, key: str, title: str | None = None) -> NewNotification:
    return NewNotification(
        recipient=recipient,
        kind="customer_assigned",
        title=title or f"新线索 {key}",
        body="请尽快跟进",
        payload={"customerId": 7, "customerName": "张三"},
        dedupe_key=key,
    )


def stored(ctx: AppContext) -> tuple[list[tuple[int, str, int | None]], int, dict[int, str]]:
    """(recipient, key, prev_id) of every notification, the number of delivery rows, every user's name."""
    with ctx.db.read() as session:
        notes = [
            (n.recipient_id, n.dedupe_key, n.prev_id)
            for n in session.scalars(select(Notification).order_by(Notification.id))
        ]
        deliveries = len(list(session.scalars(select(Delivery))))
        names = {u.id: u.name for u in session.scalars(select(User))}
    return notes, deliveries, names


def driver(session: Session) -> psycopg.Connection[Any]:
    conn = session.connection().connection.driver_connection
    assert isinstance(conn, psycopg.Connection)
    return conn


class Trace:
    """libpq's protocol trace of one connection: what went over the wire, message by message."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.file = tempfile.NamedTemporaryFile(mode="w+", suffix=".trace")  # noqa: SIM115

    def __enter__(self) -> Trace:
        self.conn.pgconn.trace(os.dup(self.file.fileno()))
        self.conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE)
        return self

    def stop(self) -> list[str]:
        self.conn.pgconn.untrace()
        with open(self.file.name) as f:
            lines = [line.split("\t") for line in f.read().splitlines()]
        self.file.close()
        return [" ".join([parts[0], *parts[2:]]).strip() for parts in lines if len(parts) > 2]

    def __exit__(self, *_exc: object) -> None:
        pass


def test_pipeline_lock_write_and_commit_are_one_round_trip(db: AppContext) -> None:
    postgres_only(db)
    alice, bob = people(db, "李丽", "赵强")
    signals = Signals()
    woken: list[set[int]] = []
    signals.subscribe_commits(lambda users, _pushed, _sent, _wake: woken.append(users))
    ran_after: list[str] = []
    with db.db.write() as session:
        session.execute(update(User).where(User.id == alice.id).values(name="李丽丽"))
        notes = write_notifications(session, db.settings, signals, [item(alice, "a1"), item(bob, "b1")], db.clock.now())
        after_commit(session, lambda: ran_after.append("after"))
        trace = Trace(driver(session)).__enter__()
    messages = trace.stop()
    listing = "\n".join(messages)
    # From the end of the block to the connection going back to the pool: one round trip (one Sync, one
    # ReadyForQuery, no simple Query), three statements (the lock, the write, the COMMIT), and the transaction
    # has ended when it returns ("I": idle).
    frontend = [m.split()[1] for m in messages if m.startswith("F ")]
    assert frontend.count("Sync") == 1 and frontend.count("Execute") == 3 and "Query" not in frontend, listing
    assert [m.split() for m in messages if m.startswith("B ReadyForQuery")] == [["B", "ReadyForQuery", "I"]], listing
    # Committed, the objects in hand carry their ids, and what runs after the commit ran.
    assert [n.id is not None for n in notes] == [True, True]
    assert ran_after == ["after"] and woken == [{alice.id, bob.id}]
    rows, deliveries, names = stored(db)
    assert rows == [(alice.id, "a1", None), (bob.id, "b1", None)] and deliveries == 4
    assert names[alice.id] == "李丽丽"


class LockWatch:
    """At every point the client runs a statement, has one's result back, or commits, a second connection reads
    whether this connection's backend holds a recipient lock (the ledger's advisory locks, key 7301)."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.observer = psycopg.connect(raw_url(ctx), autocommit=True)
        self.held_at: list[str] = []
        self.points = 0

    def _check(self, conn: Any, where: str) -> None:
        pid = conn.connection.driver_connection.info.backend_pid
        self.points += 1
        held = self.observer.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 7301 AND pid = %s AND granted",
            [pid],
        ).fetchone()
        if held and held[0]:
            self.held_at.append(where)

    def before(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self._check(conn, "before " + " ".join(statement.split())[:60])

    def after(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self._check(conn, "after " + " ".join(statement.split())[:60])

    def commit(self, conn: Any) -> None:
        self._check(conn, "COMMIT")

    def __enter__(self) -> LockWatch:
        engine = self.ctx.db.engine
        event.listen(engine, "before_cursor_execute", self.before)
        event.listen(engine, "after_cursor_execute", self.after)
        event.listen(engine, "commit", self.commit)
        return self

    def __exit__(self, *_exc: object) -> None:
        engine = self.ctx.db.engine
        event.remove(engine, "before_cursor_execute", self.before)
        event.remove(engine, "after_cursor_execute", self.after)
        event.remove(engine, "commit", self.commit)
        self.observer.close()


def test_pipeline_the_recipient_lock_is_never_held_while_the_client_has_control(db: AppContext) -> None:
    postgres_only(db)
    alice, bob = people(db, "李丽", "赵强")
    with LockWatch(db) as watch, db.db.write() as session:
        write_notifications(session, db.settings, db.signals, [item(alice, "a1"), item(bob, "b1")], db.clock.now())
    assert watch.held_at == [], watch.held_at
    assert watch.points >= 3  # the lock and the write were seen going out, and the commit
    assert [k for _, k, _ in stored(db)[0]] == ["a1", "b1"]
    # A caller that writes the rows itself, earlier (to read them in the transaction), keeps today's path: the
    # recipients stay locked from there to the commit, as the watch sees (so it does see a held lock).
    with LockWatch(db) as watch, db.db.write() as session:
        write_notifications(session, db.settings, db.signals, [item(alice, "a2")], db.clock.now())
        write_prepared(session)
        assert session.scalar(select(Notification.id).where(Notification.dedupe_key == "a2")) is not None
    assert "COMMIT" in watch.held_at
    rows = stored(db)[0]
    assert [k for _, k, _ in rows] == ["a1", "b1", "a2"] and rows[2][2] is not None


def test_pipeline_before_commit_hooks_registered_later_run_before_the_ledger_step(db: AppContext) -> None:
    """The pipelined write commits: so it is the very last step, after every other before-commit callback,
    also one registered after the notifications were prepared (whose rows then commit with them)."""
    (alice,) = people(db, "李丽")
    order: list[str] = []

    def rename(session: Session) -> None:
        order.append("hook")
        session.execute(update(User).where(User.id == alice.id).values(name="李丽丽"))

    with db.db.write() as session:
        (note,) = write_notifications(session, db.settings, db.signals, [item(alice, "a1")], db.clock.now())
        before_commit(session, lambda: rename(session))
        before_commit(session, lambda: order.append("ledger written" if note.id is not None else "ledger pending"))
    assert order == ["hook", "ledger pending"]
    rows, deliveries, names = stored(db)
    assert rows == [(alice.id, "a1", None)] and deliveries == 2 and names[alice.id] == "李丽丽"


def add_refusing_trigger(ctx: AppContext) -> Callable[[], None]:
    """A trigger that refuses a notification titled BOOM (in this test's own database); returns its removal."""
    with ctx.db.engine.begin() as conn:
        if ctx.db.is_postgres:
            conn.execute(
                text(
                    "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                    f" IF NEW.title = '{BOOM}' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_boom BEFORE INSERT ON notifications FOR EACH ROW"
                    " EXECUTE FUNCTION refuse_boom()"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_boom BEFORE INSERT ON notifications"
                    f" WHEN NEW.title = '{BOOM}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )

    def remove() -> None:
        with ctx.db.engine.begin() as conn:
            conn.execute(
                text("DROP TRIGGER refuse_boom ON notifications" if ctx.db.is_postgres else "DROP TRIGGER refuse_boom")
            )
            if ctx.db.is_postgres:
                conn.execute(text("DROP FUNCTION refuse_boom()"))

    return remove


def failing_write(ctx: AppContext, alice: User, bob: User, *, write_early: bool) -> tuple[Exception, list[str]]:
    """A transaction that renames alice and notifies both, one notice refused by the trigger; what it raised."""
    signals = Signals()
    woken: list[str] = []
    signals.subscribe_commits(lambda _users, _pushed, _sent, _wake: woken.append("signal"))
    with pytest.raises(exc.SQLAlchemyError) as raised, ctx.db.write() as session:
        session.execute(update(User).where(User.id == alice.id).values(name="改名"))
        now = ctx.clock.now()
        write_notifications(session, ctx.settings, signals, [item(alice, "a1"), item(bob, "b1", title=BOOM)], now)
        after_commit(session, lambda: woken.append("after"))
        if write_early:
            write_prepared(session)
    return raised.value, woken


def test_pipeline_an_error_in_the_write_rolls_back_everything_and_surfaces_as_before(db: AppContext) -> None:
    alice, bob = people(db, "李丽", "赵强")
    remove = add_refusing_trigger(db)
    try:
        as_before, woken_before = failing_write(db, alice, bob, write_early=True)  # today's path, kept
        now, woken_now = failing_write(db, alice, bob, write_early=False)  # the last step (pipelined on PostgreSQL)
    finally:
        remove()
    assert type(now) is type(as_before) and type(getattr(now, "orig", None)) is type(getattr(as_before, "orig", None))
    assert "refused" in str(now)
    assert woken_before == woken_now == []
    assert stored(db) == ([], 0, {alice.id: "李丽", bob.id: "赵强"})
    # The connection (back in the pool) is fine: the same write now goes through.
    with db.db.write() as session:
        write_notifications(session, db.settings, db.signals, [item(alice, "a1"), item(bob, "b1")], db.clock.now())
    assert stored(db)[0] == [(alice.id, "a1", None), (bob.id, "b1", None)]


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.01)


def test_pipeline_a_unique_violation_from_a_concurrent_writer_rolls_back(db: AppContext) -> None:
    """Another transaction (another recipient) writes the same dedupe key and commits while ours waits on it:
    ours fails with the IntegrityError it always did, and nothing of it is stored."""
    postgres_only(db)
    alice, bob = people(db, "李丽", "赵强")
    other = psycopg.connect(raw_url(db))
    pid: list[int] = []
    try:
        other.execute(
            "INSERT INTO notifications (recipient_id, kind, title, body, payload, dedupe_key, created_at)"
            " VALUES (%s, 'customer_assigned', 't', '', '{}', 'dup', now())",
            [bob.id],
        )

        def ours() -> None:
            with db.db.write() as session:
                session.execute(update(User).where(User.id == alice.id).values(name="改名"))
                write_notifications(session, db.settings, db.signals, [item(alice, "dup")], db.clock.now())
                pid.append(driver(session).info.backend_pid)

        def waiting() -> bool:
            row = other.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s) AND wait_event_type = 'Lock'", [pid]
            ).fetchone()
            return bool(row and row[0])

        with ThreadPoolExecutor(1) as pool:
            done = pool.submit(ours)
            wait_for(lambda: bool(pid) and waiting(), "our insert waiting on the other transaction's key")
            other.commit()
            with pytest.raises(exc.IntegrityError) as raised:
                done.result(timeout=WAIT)
        assert isinstance(raised.value.orig, psycopg.errors.UniqueViolation)
    finally:
        other.close()
    rows, _, names = stored(db)
    assert rows == [(bob.id, "dup", None)] and names[alice.id] == "李丽"


def test_pipeline_a_lock_timeout_rolls_back(db: AppContext) -> None:
    postgres_only(db)
    (alice,) = people(db, "李丽")
    holder = psycopg.connect(raw_url(db), autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(7301, %s)", [alice.id])
        with pytest.raises(exc.OperationalError) as raised, db.db.write() as session:
            session.execute(text("SET LOCAL lock_timeout = '50ms'"))
            session.execute(update(User).where(User.id == alice.id).values(name="改名"))
            write_notifications(session, db.settings, db.signals, [item(alice, "a1")], db.clock.now())
        assert isinstance(raised.value.orig, psycopg.errors.LockNotAvailable)
        assert "pg_advisory_xact_lock" in str(raised.value.statement)
        holder.execute("SELECT pg_advisory_unlock(7301, %s)", [alice.id])
    finally:
        holder.close()
    assert stored(db)[0:1] == ([],) and stored(db)[2][alice.id] == "李丽"
    with db.db.write() as session:
        write_notifications(session, db.settings, db.signals, [item(alice, "a1")], db.clock.now())
    assert stored(db)[0] == [(alice.id, "a1", None)]


def test_pipeline_a_lost_connection_rolls_back_and_the_pool_recovers(db: AppContext) -> None:
    postgres_only(db)
    (alice,) = people(db, "李丽")
    killer = psycopg.connect(raw_url(db), autocommit=True)
    try:
        with pytest.raises(exc.OperationalError) as raised, db.db.write() as session:
            session.execute(update(User).where(User.id == alice.id).values(name="改名"))
            write_notifications(session, db.settings, db.signals, [item(alice, "a1")], db.clock.now())
            pid = driver(session).info.backend_pid
            killer.execute("SELECT pg_terminate_backend(%s)", [pid])
            wait_for(
                lambda: (
                    killer.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone() == (0,)
                ),
                "the backend gone",
            )
        assert raised.value.connection_invalidated
    finally:
        killer.close()
    assert stored(db)[0] == [] and stored(db)[2][alice.id] == "李丽"
    with db.db.write() as session:
        write_notifications(session, db.settings, db.signals, [item(alice, "a1")], db.clock.now())
    assert stored(db)[0] == [(alice.id, "a1", None)]


def test_pipeline_concurrent_writers_keep_each_persons_ids_in_commit_order(db: AppContext) -> None:
    alice, bob = people(db, "李丽", "赵强")
    start = threading.Barrier(4)

    def writer(w: int) -> None:
        start.wait(WAIT)
        for i in range(10):
            with db.db.write() as session:
                now = db.clock.now()
                write_notifications(
                    session, db.settings, db.signals, [item(alice, f"a{w}-{i}"), item(bob, f"b{w}-{i}")], now
                )

    with ThreadPoolExecutor(4) as pool:
        for f in [pool.submit(writer, w) for w in range(4)]:
            f.result(timeout=120)
    rows = stored(db)[0]
    for person in (alice, bob):
        mine = [(k, prev) for r, k, prev in rows if r == person.id]
        with db.db.read() as session:
            ids = list(
                session.scalars(
                    select(Notification.id).where(Notification.recipient_id == person.id).order_by(Notification.id)
                )
            )
        assert len(mine) == 40
        assert [prev for _, prev in mine] == [None, *ids[:-1]]


# --- An insert left for the last step (`insert_at_last_step`: the single-lead assignment's history row) ---

HISTORY = insert(cast(Table, Assignment.__table__))


def a_lead(ctx: AppContext) -> int:
    with ctx.db.write() as session:
        lead = Customer(name="张三", phone="13800000000")
        session.add(lead)
    return lead.id


def history_row(lead: int, to: User, actor: User, at: datetime) -> dict[str, Any]:
    return {
        "customer_id": lead,
        "from_user_id": None,
        "to_user_id": to.id,
        "actor_id": actor.id,
        "via": "web",
        "batch_id": None,
        "reason": None,
        "created_at": at,
        "opened_at": None,
        "open_due_at": None,
    }


def histories(ctx: AppContext) -> list[tuple[int, int | None, datetime]]:
    with ctx.db.read() as session:
        return [
            (a.customer_id, a.to_user_id, a.created_at)
            for a in session.scalars(select(Assignment).order_by(Assignment.id))
        ]


def test_pipeline_an_insert_left_for_the_last_step_goes_in_its_one_round_trip(db: AppContext) -> None:
    postgres_only(db)
    alice, bob = people(db, "李丽", "赵强")
    lead = a_lead(db)
    at = datetime(2026, 12, 2, 22, 30, tzinfo=timezone(timedelta(hours=8)))  # not UTC: converted as the ORM does
    with db.db.write() as session:
        session.execute(update(User).where(User.id == alice.id).values(name="李丽丽"))
        insert_at_last_step(session, HISTORY, [history_row(lead, alice, bob, at)])
        write_notifications(session, db.settings, Signals(), [item(alice, "a1")], db.clock.now())
        trace = Trace(driver(session)).__enter__()
    messages = trace.stop()
    listing = "\n".join(messages)
    frontend = [m.split()[1] for m in messages if m.startswith("F ")]
    # The history INSERT, the lock, the write and the COMMIT: one Sync, one ReadyForQuery.
    assert frontend.count("Sync") == 1 and frontend.count("Execute") == 4 and "Query" not in frontend, listing
    assert histories(db) == [(lead, alice.id, at.astimezone(UTC))]
    assert stored(db)[0] == [(alice.id, "a1", None)]


def test_pipeline_a_failing_insert_left_for_the_last_step_rolls_back_everything(db: AppContext) -> None:
    alice, bob = people(db, "李丽", "赵强")
    with pytest.raises(exc.IntegrityError), db.db.write() as session:
        session.execute(update(User).where(User.id == alice.id).values(name="改名"))
        insert_at_last_step(session, HISTORY, [history_row(987_654, alice, bob, db.clock.now())])  # no such lead
        write_notifications(session, db.settings, Signals(), [item(alice, "a1")], db.clock.now())
    assert histories(db) == []
    assert stored(db) == ([], 0, {alice.id: "李丽", bob.id: "赵强"})


def test_an_insert_left_for_the_last_step_is_written_with_no_notification_to_carry_it(db: AppContext) -> None:
    alice, bob = people(db, "李丽", "赵强")
    lead = a_lead(db)
    at = db.clock.now()
    with db.db.write() as session:
        insert_at_last_step(session, HISTORY, [history_row(lead, alice, bob, at)])
        assert histories(db) == []  # not yet: another session sees nothing before the commit
    assert histories(db) == [(lead, alice.id, at)]
