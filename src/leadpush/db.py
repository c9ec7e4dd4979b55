"""Engine, sessions and write transactions for SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from anyio import to_thread
from sqlalchemy import CursorResult, DateTime, Engine, MetaData, Result, create_engine, event, exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util import greenlet_spawn

T = TypeVar("T")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, hands back aware UTC, on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to UTCDateTime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so BEGIN IMMEDIATE is ours to emit.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


POOL_SIZE = 20  # connections the pool keeps open
POOL_OVERFLOW = 20  # more it may open for a while


def _psycopg_url(url: str) -> str:
    return "postgresql+psycopg://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url


# A PostgreSQL connection given back to the pool less than this many seconds ago is handed out again without a
# ping (the pool's pre-ping was one of an assignment's six round trips: ~0.15 ms of CPU). One idle longer is
# pinged first, and a dead one replaced, as SQLAlchemy's `pool_pre_ping` would. The price: a connection the
# server dropped within that second (a restart) fails the one statement that finds it, which answers 503 and
# invalidates the whole pool, as a connection lost mid-transaction always did.
PING_IDLE_AFTER = 1.0
_IDLE_SINCE = "leadpush_idle_since"


def _ping_when_idle(engine: Engine) -> None:
    """`pool_pre_ping` for connections idle longer than PING_IDLE_AFTER only (the pool's own events)."""
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _given_back(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _handing_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < PING_IDLE_AFTER:
            return  # just opened (`info` is the DBAPI connection's own), or given back a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise exc.InvalidatePoolError() from error  # the pool opens another, as after a failed pre-ping
            raise


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=POOL_SIZE,
            max_overflow=POOL_OVERFLOW,
        )
        _sqlite_setup(engine)
        return engine
    engine = create_engine(_psycopg_url(url), pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
    _ping_when_idle(engine)
    return engine


# Set while a function runs on the event loop through `Database.on_loop`: its sessions use the asyncio engine.
_ON_LOOP: ContextVar[bool] = ContextVar("leadpush_db_on_loop", default=False)


class Database:
    """One per process: the engine, a read session and a write transaction.

    On SQLite every write transaction starts with BEGIN IMMEDIATE (the write lock is taken up front, so
    a transaction never fails half way with "database is locked") and in-process writers queue on a
    Python lock instead of spinning in SQLite's busy handler.
    """

    def __init__(self, url: str, loop_slots: int = 4) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.is_postgres = self.engine.dialect.name == "postgresql"
        write_engine = self.engine.execution_options(sqlite_begin="IMMEDIATE") if self.is_sqlite else self.engine
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(write_engine, expire_on_commit=False)
        self._write_lock = threading.RLock() if self.is_sqlite else None
        # PostgreSQL: the same engine over psycopg's asyncio connection, for work run on the event loop (`on_loop`).
        self.async_engine: AsyncEngine | None = None
        self.loop_slots = loop_slots
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        # Every engine whose sessions this database hands out (the asyncio one as its sync facade).
        self.engines: tuple[Engine, ...] = (self.engine,)
        if self.is_postgres:
            self.async_engine = create_async_engine(_psycopg_url(url), pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
            _ping_when_idle(self.async_engine.sync_engine)
            self.engines += (self.async_engine.sync_engine,)
            # Reads and writes alike: no BEGIN IMMEDIATE or write lock to tell apart on PostgreSQL.
            self._on_loop = sessionmaker(self.async_engine.sync_engine, expire_on_commit=False)

    async def on_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` — sync code that uses `read()` and `write()` — on the event loop, its statements
        awaited on psycopg's asyncio connection (SQLAlchemy's greenlet bridge): no worker thread, no wait for the
        interpreter between statements. PostgreSQL only; on SQLite it runs in a worker thread as before.

        At most `loop_slots` calls run on one loop at once (LEADPUSH_API_LOOP_SLOTS); the others wait in arrival
        order, holding no connection, so the loop's queue stays short for what else it serves (socket pushes,
        hints from other processes): run by all callers at once, each step of each waited behind all the others'."""
        if self.async_engine is None:
            return await to_thread.run_sync(fn, *args)
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self.loop_slots)
        async with slots:
            token = _ON_LOOP.set(True)
            try:
                return await greenlet_spawn(fn, *args)
            finally:
                _ON_LOOP.reset(token)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with (self._on_loop if _ON_LOOP.get() else self._read)() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction; committed on success, rolled back on any exception.

        Callbacks registered with `before_commit(session, fn)` run in registration order as the block's last
        step, just before the commit (inside the transaction: one that raises rolls everything back), then the
        ones registered with `last_step` (the very last of them may send the COMMIT itself, with its own
        statements); those registered with `after_commit(session, fn)` run only once the commit succeeded.
        """
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        try:
            with (self._on_loop if _ON_LOOP.get() else self._write)() as session:
                try:
                    yield session
                    run_before_commit(session, commit_follows=True)
                    session.commit()  # after a last step that committed itself: nothing left to do
                except BaseException:
                    session.rollback()
                    raise
                callbacks: list[Callable[[], None]] = session.info.pop("after_commit", [])
        finally:
            if lock is not None:
                lock.release()
        for fn in callbacks:
            fn()

    @property
    def pool_size(self) -> int:
        """The connections the pool keeps open (the overflow aside): the default for the api's threads."""
        return POOL_SIZE

    @property
    def max_connections(self) -> int:
        """The most connections the pool opens at once."""
        return POOL_SIZE + POOL_OVERFLOW

    def dispose(self) -> None:
        self.engine.dispose()
        if self.async_engine is not None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # no loop here (a command's end, a test's teardown): close its connections
                asyncio.run(self.async_engine.dispose())
            else:  # on a loop: let go of its connections, which close with their objects
                self.async_engine.sync_engine.dispose(close=False)


def before_commit(session: Session, fn: Callable[[], None]) -> None:
    """Run fn as this transaction's last step, just before `Database.write` commits it (in registration order).

    For work that must come after everything else the transaction does. (The notification ledger's step,
    which takes per-recipient locks, comes after these: see `last_step`.)
    """
    session.info.setdefault("before_commit", []).append(fn)


def last_step(session: Session, fn: Callable[[bool], None]) -> None:
    """Run fn after every `before_commit` callback (those registered later too), just before the commit.

    fn is called with True only when it is the very last thing before `Database.write` commits: it may then
    commit the transaction itself, sending the COMMIT together with its own statements (the notification
    ledger's step does, on PostgreSQL: its lock, write and COMMIT are one round trip); the commit that follows
    finds nothing left to do. fn(False): something else comes after it, it must not commit.
    """
    session.info.setdefault("last_step", []).append(fn)


def run_before_commit(session: Session, *, commit_follows: bool = False) -> None:
    """Run the callbacks registered with `before_commit`, and any they register, in order; then those
    registered with `last_step` (the very last one told whether the commit follows: `commit_follows`)."""
    while True:
        while callbacks := session.info.pop("before_commit", None):
            for fn in callbacks:
                fn()
        steps: list[Callable[[bool], None]] = session.info.pop("last_step", [])
        if not steps:
            return
        for i, step in enumerate(steps):
            final = i == len(steps) - 1 and not session.info.get("before_commit") and not session.info.get("last_step")
            step(commit_follows and final)


def after_commit(session: Session, fn: Callable[[], None]) -> None:
    """Run fn after this session's transaction commits (never if it rolls back)."""
    session.info.setdefault("after_commit", []).append(fn)


def rows_changed(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE touched (SQLAlchemy types `Session.execute` as a plain Result)."""
    return cast(CursorResult[Any], result).rowcount


_VERDICTS_KEPT = 1024  # statement texts `on_writes_to` keeps its verdict for, per cache


def on_writes_to(engine: Engine, watched: re.Pattern[str], invalidate: Callable[[], None], key: str) -> None:
    """Call `invalidate` whenever a statement on `engine` writes a table `watched` names: at once, and again when
    its connection goes back to the pool (after the commit, so a copy read meanwhile from the old rows goes
    too). `key` marks such a connection in its info (one key per cache). For per-process caches of rows."""

    # The verdict per statement text: most statements are the same few strings (SQLAlchemy's compiled cache),
    # so the regular expression runs once per text, not once per execution. Bounded: texts that vary (an IN
    # list expanded to its length) cannot make it grow without end.
    verdicts: dict[str, bool] = {}

    def writes_watched(statement: str) -> bool:
        verdict = verdicts.get(statement)
        if verdict is None:
            head = statement.lstrip()[:8].upper()
            reads = head.startswith(("SELECT", "BEGIN", "PRAGMA", "SAVEPOIN", "RELEASE", "ROLLBACK", "COMMIT"))
            verdict = not reads and watched.search(statement) is not None
            if len(verdicts) >= _VERDICTS_KEPT:
                verdicts.clear()
            verdicts[statement] = verdict
        return verdict

    def watch(conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool) -> None:
        if writes_watched(statement):
            invalidate()
            conn.info[key] = True

    def checkin(_dbapi_conn: Any, record: Any) -> None:
        info = getattr(record, "info", None)
        if info and info.pop(key, False):
            invalidate()

    event.listen(engine, "before_cursor_execute", watch)
    event.listen(engine.pool, "checkin", checkin)
