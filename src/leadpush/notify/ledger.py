"""Writing notifications and their per-channel delivery rows inside the caller's transaction."""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, partial
from typing import Any

from sqlalchemy import Connection, Insert, Table, TextClause, func, select, text
from sqlalchemy.dialects.sqlite import DATETIME as SQLITE_DATETIME
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.util import await_only

from leadpush.config import Settings
from leadpush.db import after_commit, last_step
from leadpush.notify.models import Delivery, Notification
from leadpush.notify.policy import ChannelPlan, plan_deliveries
from leadpush.notify.preferences import choices_of, chosen_for
from leadpush.notify.service import push_message
from leadpush.notify.signals import Signals, deadline_wake
from leadpush.users.models import User

INACTIVE = "收件人已停用，不推送"


@dataclass
class NewNotification:
    recipient: User
    kind: str
    title: str
    body: str
    payload: dict[str, Any]
    dedupe_key: str
    actor_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def about_own_action(self) -> bool:
        return self.actor_id is not None and self.actor_id == self.recipient.id


LOCK_RECIPIENTS = text(
    "SELECT count(pg_advisory_xact_lock(7301, r)) FROM"
    " (SELECT r FROM unnest(CAST(:ids AS integer[])) AS r ORDER BY r) AS ordered"
)
PENDING = "ledger_pending"  # session.info key: what `write_notifications` prepared, written before commit
_STEP = "ledger_step"  # session.info key: the last step that writes it is registered
_DEFERRED = "ledger_deferred"  # session.info key: inserts `insert_at_last_step` left for the last step
# The deliveries written with each notification object still in hand (see `planned_deliveries`).
_PLANNED: weakref.WeakKeyDictionary[Notification, list[Delivery]] = weakref.WeakKeyDictionary()


def lock_recipients(session: Session, recipient_ids: Collection[int]) -> None:
    """On PostgreSQL, serialise notification inserts per recipient until commit.

    Ids come from a sequence, so two transactions could commit a recipient's ids out of order and a
    client resuming `after=<id>` would skip one. Holding a per-recipient transaction lock while
    inserting makes each recipient's ids rise in commit order. Locks are taken in id order (no deadlock),
    in one statement. SQLite needs nothing: its writers are already serialised.
    """
    if not recipient_ids or session.get_bind().dialect.name != "postgresql":
        return
    session.execute(LOCK_RECIPIENTS, {"ids": sorted(recipient_ids)})


@dataclass
class Prepared:
    """One notification `write_notifications` prepared, its planned deliveries, and the list it was returned in."""

    note: Notification
    deliveries: list[Delivery]
    returned: list[Notification]
    signals: Signals


def write_notifications(
    session: Session, settings: Settings, signals: Signals, items: list[NewNotification], now: datetime
) -> list[Notification]:
    """Notifications (skipping dedupe keys already present) and one delivery per channel, written with the
    caller's transaction: as its last step, just before `Database.write` commits it.

    Here they are only prepared, in memory (the recipients' channel choices are read now): nothing is
    locked and no row exists yet, so the rest of the transaction holds up nobody else's notifications.
    The before-commit step then (the last one, after every other `before_commit` callback), with nothing in
    between, locks the recipients (PostgreSQL, in id order), drops the dedupe keys already stored or prepared
    earlier in this transaction, reads the recipients' latest ids, inserts the notifications (each pointing
    back at its recipient's previous one) and their deliveries, and has the commit signalled.

    The returned Notification objects get their ids at that step: until the block commits their `id` and
    `prev_id` are None, and none of their rows can be read in the transaction. After it, the returned
    list holds exactly the notifications written (a dropped duplicate is taken out of it), with their ids.
    """
    if not items:
        return []
    pending: list[Prepared] | None = session.info.get(PENDING)
    if pending is None:
        pending = session.info[PENDING] = []
        _register_step(session)
    choices = choices_of(session, {i.recipient.id for i in items})  # one query for every recipient's choices
    # While this process pushes what it commits to the recipients' sockets (the runtime's commit listener: here
    # and, through the bus, on every api process), that push is the in-app delivery: the row is written sent.
    pushed = signals.pushes_inapp
    created: list[Notification] = []
    for item in items:
        note = Notification(
            recipient_id=item.recipient.id,
            kind=item.kind,
            title=item.title,
            body=item.body,
            payload=item.payload,
            dedupe_key=item.dedupe_key,
            created_at=now,
            prev_id=None,
            # A notice about the recipient's own action (a claim, a manager taking a lead themselves) is
            # kept in their history but is no news to them: it is born read, so no badge and no toast.
            read_at=now if item.about_own_action else None,
        )
        deliveries = [
            _planned(plan, item.recipient.id, now, pushed)
            for plan in channel_plans(settings, item, chosen_for(settings, choices.get(item.recipient.id), item.kind))
        ]
        pending.append(Prepared(note, deliveries, created, signals))
        created.append(note)
    return created


def _register_step(session: Session) -> None:
    if not session.info.get(_STEP):  # (a caller's own `write_prepared` leaves the step registered)
        session.info[_STEP] = True
        last_step(session, partial(_last_step, session))


def insert_at_last_step(session: Session, statement: Insert, rows: list[dict[str, Any]]) -> None:
    """Run `session.execute(statement, rows)` in the ledger's last step instead of now, before its own writes.

    On PostgreSQL, when that step is the one that commits, the insert goes in its pipeline with the lock, the
    write and the COMMIT: one round trip fewer (the single-lead assignment's history row: issue 17). Only for
    rows nothing reads before the commit, and a plain INSERT of one table (no RETURNING). Elsewhere it runs at
    the start of the step, as `session.execute` would have.
    """
    session.info.setdefault(_DEFERRED, []).append((statement, rows))
    _register_step(session)


def _run_deferred(session: Session, deferred: list[tuple[Insert, list[dict[str, Any]]]]) -> None:
    for statement, rows in deferred:
        session.execute(statement, rows)


@cache
def _bind_processor(table: Table, key: str, dialect: Dialect) -> Callable[[Any], Any] | None:
    """What SQLAlchemy does to a value of this column before the driver gets it (UTCDateTime: aware → naive UTC)."""
    return table.c[key].type.bind_processor(dialect)


def _deferred_statements(
    deferred: list[tuple[Insert, list[dict[str, Any]]]], dialect: Dialect
) -> list[tuple[str, dict[str, Any] | None]]:
    """The deferred inserts as (driver SQL, processed parameters), one per row, for the pipeline."""
    out: list[tuple[str, dict[str, Any] | None]] = []
    for statement, rows in deferred:
        table = statement.table
        assert isinstance(table, Table)
        for row in rows:
            params = {}
            for key, value in row.items():
                process = _bind_processor(table, key, dialect)
                params[key] = process(value) if process is not None and value is not None else value
            out.append((_driver_sql(statement, dialect, tuple(row)), params))
    return out


# The history's detail of an in-app delivery written as sent. On SQLite the trigger of migration 0012 writes it
# (the same text: tests/notify/test_sqlfold_tries.py).
PUSHED_AT_COMMIT = "提交时已推送到站内连接"


def _planned(plan: ChannelPlan, recipient_id: int, now: datetime, pushed: bool) -> Delivery:
    """The delivery row of one plan; in-app written as sent (one try, at `now`) when the commit pushes it."""
    sent = pushed and plan.channel == "inapp" and plan.status == "pending"
    return Delivery(
        recipient_id=recipient_id,
        channel=plan.channel,
        status="sent" if sent else plan.status,
        attempts=1 if sent else 0,
        policy=plan.reason,
        next_attempt_at=now if plan.status == "pending" and not sent else None,
        created_at=now,
        updated_at=now,
        sent_at=now if sent else None,
    )


def planned_deliveries(note: Notification) -> list[Delivery] | None:
    """The delivery rows written with `note` (as objects, the ones inserted), or None if this process did not
    write it: what an answer built from the objects in hand can read instead of the ledger."""
    return _PLANNED.get(note)


def _last_step(session: Session, commit_follows: bool) -> None:
    session.info.pop(_STEP, None)
    write_prepared(session, commit=commit_follows)


def write_prepared(session: Session, *, commit: bool = False) -> None:
    """The before-commit step: write what `write_notifications` prepared in this transaction (see there).

    A caller that must read or change the rows inside the transaction may call it itself, earlier: the rows
    are written then, and the recipients stay locked from there to the commit (what the step avoids).

    The rows go in with Core statements, not the ORM's flush (the objects stay out of the session; their ids,
    `prev_id` and the deliveries' ids are set from what the statements return). On PostgreSQL, after the
    lock: ONE statement drops the stored dedupe keys, reads the latest ids, draws the new ids and inserts the
    notifications and their deliveries. The lock must be its own, earlier statement: a statement's snapshot
    is taken when it starts, and the latest ids must be read after the lock is granted. With `commit` (only
    `Database.write`'s last step: nothing else follows but the commit) the lock, the write and the COMMIT go
    to the server together, one pipeline and one round trip (`_write_postgres_and_commit`), so no client
    round trip and no turn at the interpreter is taken while the recipients are locked; the transaction has
    committed when this returns. Otherwise the lock is held over two round trips: the write and the COMMIT.
    On SQLite (writers serialised; `commit` changes nothing): one INSERT ... SELECT of the notifications per
    round (a recipient's k-th notification of the transaction in round k), reading the latest ids and stored
    keys in the same statement, and one INSERT of the deliveries; the one try of each in-app delivery written
    sent is inserted with it by the schema's trigger (SQLite inserts into one table per statement and has no
    data-modifying CTE: migration 0012), not by a statement of its own under the write lock.
    """
    pending: list[Prepared] = session.info.pop(PENDING, [])
    deferred = session.info.pop(_DEFERRED, [])
    pipelined = bool(pending) and commit and session.get_bind().dialect.name == "postgresql" and _can_pipeline(session)
    if not pipelined:  # the deferred inserts now, before the ledger's writes (pipelined: in the same round trip)
        _run_deferred(session, deferred)
    if not pending:
        return
    fresh: list[Prepared] = []
    prepared_keys: set[str] = set()
    for p in pending:  # a key prepared twice in this transaction: the first one stands
        if p.note.dedupe_key in prepared_keys:
            p.returned.remove(p.note)
            continue
        prepared_keys.add(p.note.dedupe_key)
        fresh.append(p)
    if pipelined:
        written = _write_postgres_and_commit(session, fresh, deferred)
    elif session.get_bind().dialect.name != "postgresql":
        written = _insert_sqlite(session, fresh)
    else:
        lock_recipients(session, {p.note.recipient_id for p in fresh})
        written = _insert_postgres(session, fresh)
    for p in fresh:
        if p.note.id is None:  # its key was already stored: not written
            p.returned.remove(p.note)
        else:
            _PLANNED[p.note] = p.deliveries
    by_signals: dict[int, tuple[Signals, set[int], list[Notification], list[int]]] = {}
    for p in written:
        # [in-app rows written sent, rows left pending for a worker]
        _, recipients, notes, counts = by_signals.setdefault(id(p.signals), (p.signals, set(), [], [0, 0]))
        recipients.add(p.note.recipient_id)
        notes.append(p.note)
        counts[0] += sum(d.channel == "inapp" and d.status == "sent" for d in p.deliveries)
        counts[1] += sum(d.status == "pending" for d in p.deliveries)
    for signals, recipients, notes, counts in by_signals.values():
        # After the commit, the notifications as pushed go with the hint: sockets need no ledger read. The workers
        # are woken only if it left them rows to send (what the commit pushed is delivered), the schedulers only
        # for deadlines the transaction noted (read then: the caller may write them after an early `write_prepared`).
        after_commit(session, partial(_committed, session, signals, recipients, notes, counts[0], counts[1] > 0))


def _committed(
    session: Session, signals: Signals, recipients: set[int], notes: list[Notification], sent: int, pending: bool
) -> None:
    signals.notifications_committed(recipients, partial(_as_pushed, notes), sent, deadline_wake(session, pending))


def _as_pushed(notes: list[Notification]) -> list[tuple[int, dict[str, Any]]]:
    return [(n.recipient_id, push_message(n)) for n in sorted(notes, key=lambda n: n.id)]


_sqlite_stamp = SQLITE_DATETIME().bind_processor(sqlite_dialect())  # the text the ORM stores on SQLite
assert _sqlite_stamp is not None
_SQLITE_STAMP: Callable[[datetime], str] = _sqlite_stamp


def _stamper(sqlite: bool) -> Callable[[datetime | None], str | None]:
    """A UTC timestamp as the statements below take it: on SQLite the very text `UTCDateTime` stores (rows are
    compared as text there), on PostgreSQL an ISO `timestamp` literal."""

    def stamp(value: datetime | None) -> str | None:
        if value is None:
            return None
        naive = value.astimezone(UTC).replace(tzinfo=None)
        return _SQLITE_STAMP(naive) if sqlite else naive.isoformat()

    return stamp


def _note_row(i: int, note: Notification, stamp: Callable[[datetime | None], str | None]) -> dict[str, Any]:
    return {
        "o": i,
        "r": note.recipient_id,
        "k": note.kind,
        "t": note.title,
        "b": note.body,
        "p": json.dumps(note.payload),  # as the JSON type stores it
        "d": note.dedupe_key,
        "c": stamp(note.created_at),
        "ra": stamp(note.read_at),
    }


def _delivery_row(i: int, d: Delivery, stamp: Callable[[datetime | None], str | None]) -> dict[str, Any]:
    return {
        "o": i,
        "ch": d.channel,
        "s": d.status,
        "po": d.policy,
        "a": d.attempts,
        "sa": stamp(d.sent_at),
        "na": stamp(d.next_attempt_at),
        "c": stamp(d.created_at),
        "u": stamp(d.updated_at),
    }


# The dedupe check's `OFFSET 0` keeps it a probe of the key's unique index per new notification: as a join
# (what the planner makes of a plain NOT EXISTS), a ledger it has not analysed yet is estimated at a few dozen
# rows and read whole into a hash at every write (tests/notify/test_ledger_plan.py).
# Careful: a statement naming the tables the per-process caches watch (`leadpush.db.on_writes_to`) would drop
# those caches at every write. These name only notifications and deliveries.
_PG_WRITE = text(
    """
WITH src AS (
  SELECT r.* FROM json_to_recordset(CAST(:notes AS json)) AS r(
    o int, r int, k text, t text, b text, p text, d text, c timestamp, ra timestamp)
  WHERE NOT EXISTS (SELECT 1 FROM notifications AS n WHERE n.dedupe_key = r.d OFFSET 0)
), numbered AS (
  SELECT nextval(pg_get_serial_sequence('notifications', 'id')) AS id, s.*
  FROM (SELECT * FROM src ORDER BY o) AS s
), chained AS (
  SELECT m.*, coalesce(
    lag(m.id) OVER (PARTITION BY m.r ORDER BY m.id),
    (SELECT max(n.id) FROM notifications AS n WHERE n.recipient_id = m.r)
  ) AS prev_id
  FROM numbered AS m
), notes AS (
  INSERT INTO notifications (id, recipient_id, kind, title, body, payload, dedupe_key, prev_id, created_at, read_at)
  SELECT id, r, k, t, b, CAST(p AS json), d, prev_id, c, ra FROM chained
  RETURNING id, prev_id
), dels AS (
  INSERT INTO deliveries (notification_id, recipient_id, channel, status, attempts, policy, next_attempt_at,
                          created_at, updated_at, sent_at)
  SELECT ch.id, ch.r, x.ch, x.s, x.a, x.po, x.na, x.c, x.u, x.sa
  FROM json_to_recordset(CAST(:deliveries AS json)) AS x(
    o int, ch text, s text, a int, po text, na timestamp, c timestamp, u timestamp, sa timestamp)
  JOIN chained AS ch ON ch.o = x.o
  RETURNING id, notification_id, channel, attempts, sent_at
), tries AS (
  INSERT INTO delivery_attempts (delivery_id, attempt, started_at, finished_at, outcome, status, detail)
  SELECT id, attempts, sent_at, sent_at, 'sent', 'sent', :pushed FROM dels WHERE sent_at IS NOT NULL
)
SELECT c.o, c.id, c.prev_id, NULL AS channel FROM chained AS c JOIN notes ON notes.id = c.id
UNION ALL
SELECT NULL, dels.notification_id, dels.id, dels.channel FROM dels
"""
)


def _pg_params(fresh: list[Prepared]) -> dict[str, Any]:
    stamp = _stamper(sqlite=False)
    notes = [_note_row(i, p.note, stamp) for i, p in enumerate(fresh)]
    deliveries = [_delivery_row(i, d, stamp) for i, p in enumerate(fresh) for d in p.deliveries]
    return {"notes": json.dumps(notes), "deliveries": json.dumps(deliveries), "pushed": PUSHED_AT_COMMIT}


def _insert_postgres(session: Session, fresh: list[Prepared]) -> list[Prepared]:
    """One statement (see `write_prepared`); the notifications whose key was stored keep `id` None."""
    return _pg_written(fresh, session.execute(_PG_WRITE, _pg_params(fresh)))


def _can_pipeline(session: Session) -> bool:
    """The session's driver is psycopg 3 and its libpq has pipeline mode (libpq 14 or later); else today's path."""
    dialect = session.get_bind().dialect
    return dialect.driver == "psycopg" and _libpq_pipelines()


@cache
def _libpq_pipelines() -> bool:
    import psycopg  # the PostgreSQL driver: imported only when PostgreSQL is used

    return psycopg.Pipeline.is_supported()


@cache
def _driver_sql(statement: TextClause | Insert, dialect: Dialect, keys: tuple[str, ...] = ()) -> str:
    """The statement as SQLAlchemy hands it to the driver (psycopg's `%(name)s` placeholders); an INSERT of one
    row with the columns `keys`."""
    return str(statement.compile(dialect=dialect, column_keys=list(keys) if keys else None))


def _write_postgres_and_commit(
    session: Session, fresh: list[Prepared], deferred: list[tuple[Insert, list[dict[str, Any]]]]
) -> list[Prepared]:
    """The lock, the write (`_PG_WRITE`) and the COMMIT, sent as one psycopg pipeline: one round trip (the
    `deferred` inserts of `insert_at_last_step` first, in the same pipeline).

    The server runs them in order, each statement with its own snapshot (the write sees what the lock's
    previous holder committed); the first that fails aborts the rest, the COMMIT included, and leaves the
    transaction failed, for `Database.write` to roll back. They go on the session's psycopg connection itself
    (SQLAlchemy has no pipeline), so what SQLAlchemy does around a statement is done here: the session is
    flushed first (the autoflush of a `session.execute`), the engine's `before_cursor_execute` and
    `after_cursor_execute` listeners are told of the lock and the write (their return values are not used), and
    an error goes through the connection's own handling: it surfaces as the same SQLAlchemy exception, and a
    lost connection is invalidated. SQLAlchemy's commit then finds the connection idle, a no-op for psycopg.
    """
    session.flush()
    conn = session.connection()
    raw = conn.connection.driver_connection
    assert raw is not None
    statements: list[tuple[str, dict[str, Any] | None]] = [
        *_deferred_statements(deferred, conn.dialect),
        (_driver_sql(LOCK_RECIPIENTS, conn.dialect), {"ids": sorted({p.note.recipient_id for p in fresh})}),
        (_driver_sql(_PG_WRITE, conn.dialect), _pg_params(fresh)),
        ("COMMIT", None),
    ]
    write_at = len(statements) - 2  # the ledger's write: the rows it returns
    cursors = [raw.cursor() for _ in statements]
    on_loop = _is_async(raw)  # run on the event loop (`Database.on_loop`): awaited through SQLAlchemy's bridge
    events = conn._has_events or conn.engine._has_events
    try:
        if events:
            _tell(conn, "before_cursor_execute", cursors, statements)
        try:
            if on_loop:
                rows = await_only(_pipeline_async(raw, cursors, statements, write_at))
            else:
                with raw.pipeline():
                    for cursor, (sql, params) in zip(cursors, statements, strict=True):
                        cursor.execute(sql, params)
                rows = cursors[write_at].fetchall()
        except BaseException as e:  # as SQLAlchemy's own execution does: wrapped, or the connection invalidated
            failed = next((i for i, c in enumerate(cursors) if c.pgresult is None), len(cursors) - 1)
            sql, params = statements[failed]
            # (the cursors are closed below; SQLAlchemy would close an asyncio one without awaiting it)
            conn._handle_dbapi_exception(e, sql, params, None if on_loop else cursors[failed], None)
        if events:
            _tell(conn, "after_cursor_execute", cursors, statements)
    finally:
        if on_loop:
            await_only(_close_async(cursors))
        else:
            for cursor in cursors:
                cursor.close()
    return _pg_written(fresh, rows)


def _is_async(raw: Any) -> bool:
    import psycopg

    return isinstance(raw, psycopg.AsyncConnection)


async def _pipeline_async(
    raw: Any, cursors: list[Any], statements: list[tuple[str, dict[str, Any] | None]], write_at: int
) -> Any:
    """`_write_postgres_and_commit`'s pipeline on psycopg's asyncio connection."""
    async with raw.pipeline():
        for cursor, (sql, params) in zip(cursors, statements, strict=True):
            await cursor.execute(sql, params)
    return await cursors[write_at].fetchall()


async def _close_async(cursors: list[Any]) -> None:
    for cursor in cursors:
        await cursor.close()


def _tell(conn: Connection, what: str, cursors: list[Any], statements: list[tuple[str, dict[str, Any] | None]]) -> None:
    """Hand the deferred inserts, the lock and the write (not the COMMIT: SQLAlchemy reports its commit itself)
    to the engine's cursor listeners, as SQLAlchemy does for the statements it runs."""
    listeners = getattr(conn.dispatch, what)
    for cursor, (sql, params) in zip(cursors[:-1], statements[:-1], strict=True):
        listeners(conn, cursor, sql, params, None, False)


def _pg_written(fresh: list[Prepared], result: Any) -> list[Prepared]:
    """Ids from `_PG_WRITE`'s rows, set on the objects in hand; the notifications written."""
    written: list[Prepared] = []
    delivery_ids: dict[tuple[int, str], int] = {}
    for o, a, b, channel in result:
        if channel is None:
            p = fresh[o]
            p.note.id, p.note.prev_id = a, b
            written.append(p)
        else:
            delivery_ids[(a, channel)] = b
    _delivery_ids(written, delivery_ids)
    return written


# On SQLite the statements go to the driver as they are (sqlite3 takes `:name` parameters): nothing to compile,
# no ORM pass, 20-30 µs less each under the write lock.
_SQLITE_NOTES = """
INSERT INTO notifications (recipient_id, kind, title, body, payload, dedupe_key, prev_id, created_at, read_at)
SELECT r, k, t, b, p, d, (SELECT max(n.id) FROM notifications AS n WHERE n.recipient_id = src.r), c, ra
FROM (
  SELECT json_extract(value, '$.r') AS r, json_extract(value, '$.k') AS k, json_extract(value, '$.t') AS t,
         json_extract(value, '$.b') AS b, json_extract(value, '$.p') AS p, json_extract(value, '$.d') AS d,
         json_extract(value, '$.c') AS c, json_extract(value, '$.ra') AS ra
  FROM json_each(:notes)
) AS src
WHERE NOT EXISTS (SELECT 1 FROM notifications AS n WHERE n.dedupe_key = src.d)
RETURNING id, dedupe_key, prev_id
"""
_SQLITE_DELIVERIES = """
INSERT INTO deliveries (notification_id, recipient_id, channel, status, attempts, policy, next_attempt_at,
                        created_at, updated_at, sent_at)
SELECT json_extract(value, '$.n'), json_extract(value, '$.r'), json_extract(value, '$.ch'),
       json_extract(value, '$.s'), json_extract(value, '$.a'), json_extract(value, '$.po'),
       json_extract(value, '$.na'), json_extract(value, '$.c'), json_extract(value, '$.u'), json_extract(value, '$.sa')
FROM json_each(:deliveries)
RETURNING id, notification_id, channel
"""


def _insert_sqlite(session: Session, fresh: list[Prepared]) -> list[Prepared]:
    """One INSERT per round, one for the deliveries (see `write_prepared`)."""
    stamp = _stamper(sqlite=True)
    # A recipient's k-th notification of this transaction goes in round k, so the max(id) it reads is the
    # id its k-1-th got (an assignment's two notices, to two people, are one round).
    rounds: list[list[Prepared]] = []
    nth: dict[int, int] = {}
    for p in fresh:
        k = nth[p.note.recipient_id] = nth.get(p.note.recipient_id, -1) + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(p)
    written: list[Prepared] = []
    conn = session.connection()
    for batch in rounds:
        by_key = {p.note.dedupe_key: p for p in batch}
        rows = json.dumps([_note_row(i, p.note, stamp) for i, p in enumerate(batch)])
        for note_id, key, prev_id in conn.exec_driver_sql(_SQLITE_NOTES, {"notes": rows}):
            p = by_key[key]
            p.note.id, p.note.prev_id = note_id, prev_id
            written.append(p)
    if not written:
        return written
    deliveries = []
    for p in written:
        for d in p.deliveries:
            row = _delivery_row(0, d, stamp)
            row["n"], row["r"] = p.note.id, p.note.recipient_id
            deliveries.append(row)
    if deliveries:
        # The one try of each in-app row written sent goes in with it: the schema's trigger (migration 0012).
        result = conn.exec_driver_sql(_SQLITE_DELIVERIES, {"deliveries": json.dumps(deliveries)})
        _delivery_ids(written, {(nid, channel): did for did, nid, channel in result})
    return written


def _delivery_ids(written: list[Prepared], ids: dict[tuple[int, str], int]) -> None:
    for p in written:
        for d in p.deliveries:
            d.notification_id = p.note.id
            d.id = ids[(p.note.id, d.channel)]


def channel_plans(
    settings: Settings, item: NewNotification, chosen: Collection[str] | None = None
) -> list[ChannelPlan]:
    """The policy's plan as the recipient's `chosen` channels shape it; for a deactivated recipient every
    channel is skipped.

    They have left: nothing reaches them (their sockets and long polls are ended too). The notification
    stays in their history and the skipped rows show why, as for any channel the policy does not use.
    """
    plans = plan_deliveries(settings, item.kind, item.recipient, item.actor_id, chosen)
    if item.recipient.active:
        return plans
    return [ChannelPlan(p.channel, "skipped", INACTIVE) if p.status == "pending" else p for p in plans]


def unread_count(session: Session, user_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Notification)
            .where(Notification.recipient_id == user_id, Notification.read_at.is_(None))
        )
        or 0
    )
