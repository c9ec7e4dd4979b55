"""`Database.on_loop` (issue 17): on PostgreSQL sync code that uses `read()` and `write()` runs on the event loop,
its statements awaited on psycopg's asyncio connection, so the assignment routes need no worker thread and the
loop goes on serving while a statement waits; on SQLite it runs in a worker thread as before. What a write
through it commits, rolls back and invalidates is what the same write in a thread does."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from sqlalchemy import text
from support.databases import DATABASES, database_url
from support.servers import make_settings

from leadpush.context import AppContext
from leadpush.migrate import upgrade
from leadpush.transfer.deadlines import rules_in_force
from leadpush.transfer.models import TransferRule

LOCK_KEY = 741_017


@contextmanager
def context(kind: str, directory: str) -> Iterator[AppContext]:
    gen = database_url(kind, directory)
    url = next(gen)
    upgrade(url)
    ctx = AppContext.from_settings(make_settings(url, rule_cache_seconds=60))
    try:
        yield ctx
    finally:
        ctx.db.dispose()
        gen.close()


@pytest.fixture(params=DATABASES)
def ctx(request: pytest.FixtureRequest, tmp_path) -> Iterator[AppContext]:  # noqa: ANN001
    with context(request.param, str(tmp_path)) as ctx:
        yield ctx


@pytest.fixture
def pg(tmp_path) -> Iterator[AppContext]:  # noqa: ANN001
    with context("postgres", str(tmp_path)) as ctx:
        yield ctx


@pytest.fixture
def lite(tmp_path) -> Iterator[AppContext]:  # noqa: ANN001
    with context("sqlite", str(tmp_path)) as ctx:
        yield ctx


def _raw_url(ctx: AppContext) -> str:
    return ctx.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def waiting_for_the_lock(observer: psycopg.Connection) -> int:
    """How many backends wait for LOCK_KEY (read by a connection of the test's own)."""
    row = observer.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND NOT granted", [LOCK_KEY]
    ).fetchone()
    return row[0] if row else 0


def test_on_loop_runs_on_the_loop_and_the_loop_serves_while_a_statement_waits(pg: AppContext) -> None:
    ctx = pg
    holder = psycopg.connect(_raw_url(ctx), autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
    ran_on: list[int] = []

    def waits_for_the_lock() -> str:
        ran_on.append(threading.get_ident())
        with ctx.db.write() as session:
            session.execute(text("SET LOCAL lock_timeout = '20s'"))
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
            return "granted"

    async def main() -> tuple[str, int]:
        job = asyncio.create_task(ctx.db.on_loop(waits_for_the_lock))
        # The statement is waiting for the lock: if it blocked the loop, this coroutine could not run to free it.
        observer = psycopg.connect(_raw_url(ctx), autocommit=True)
        try:
            while not waiting_for_the_lock(observer):
                assert not job.done(), job
                await asyncio.sleep(0.01)
        finally:
            observer.close()
        holder.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
        return await job, threading.get_ident()

    try:
        answer, loop_thread = asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        holder.close()
    assert answer == "granted"
    assert ran_on == [loop_thread]


def test_on_loop_on_sqlite_runs_in_a_worker_thread(lite: AppContext) -> None:
    ctx = lite

    async def main() -> tuple[int, int]:
        return await ctx.db.on_loop(threading.get_ident), threading.get_ident()

    worker, loop_thread = asyncio.run(main())
    assert worker != loop_thread


def test_a_write_through_on_loop_that_fails_leaves_nothing_and_its_error_reaches_the_caller(ctx: AppContext) -> None:
    def writes_then_fails() -> None:
        with ctx.db.write() as session:
            session.execute(text("INSERT INTO teams (name, created_at) VALUES ('A组', CURRENT_TIMESTAMP)"))
            raise LookupError("线索不存在")

    with pytest.raises(LookupError, match="线索不存在"):
        asyncio.run(ctx.db.on_loop(writes_then_fails))
    with ctx.db.read() as session:
        assert session.scalar(text("SELECT count(*) FROM teams")) == 0

    def writes() -> int:
        with ctx.db.write() as session:
            session.execute(text("INSERT INTO teams (name, created_at) VALUES ('B组', CURRENT_TIMESTAMP)"))
        with ctx.db.read() as session:
            return session.scalar(text("SELECT count(*) FROM teams"))

    assert asyncio.run(ctx.db.on_loop(writes)) == 1


def test_a_rule_written_through_on_loop_drops_the_process_copy_of_the_rules(ctx: AppContext) -> None:
    """One rule cache for both engines: a copy made by a thread's session is dropped by a write on the loop."""
    with ctx.db.write() as session:
        session.add(
            TransferRule(name="3天", condition="no_follow_up_after_assign", threshold_hours=72, action="public_pool")
        )
    with ctx.db.write() as session:
        assert [r.name for r in rules_in_force(session)] == ["3天"]  # copied for a minute

    def disable() -> None:
        with ctx.db.write() as session:
            session.execute(text("UPDATE transfer_rules SET enabled = false"))

    asyncio.run(ctx.db.on_loop(disable))
    with ctx.db.write() as session:
        assert rules_in_force(session) == []

    def read_on_loop() -> list[str]:
        with ctx.db.read() as session:
            return [r.name for r in rules_in_force(session)]

    assert asyncio.run(ctx.db.on_loop(read_on_loop)) == []


def test_at_most_loop_slots_run_on_the_loop_at_once_the_rest_in_arrival_order(pg: AppContext) -> None:
    ctx = pg
    ctx.db.loop_slots = 2
    holder = psycopg.connect(_raw_url(ctx), autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
    running: list[int] = []
    started: list[int] = []
    most = [0]

    def one(n: int) -> int:
        started.append(n)
        running.append(n)
        most[0] = max(most[0], len(running))
        with ctx.db.write() as session:
            session.execute(text("SET LOCAL lock_timeout = '20s'"))
            session.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": LOCK_KEY})
        running.remove(n)
        return n

    async def main() -> list[int]:
        jobs = [asyncio.create_task(ctx.db.on_loop(one, n)) for n in range(5)]
        observer = psycopg.connect(_raw_url(ctx), autocommit=True)
        try:
            while waiting_for_the_lock(observer) < 2:
                await asyncio.sleep(0.01)
        finally:
            observer.close()
        assert sorted(running) == [0, 1], running  # two wait for the lock; three wait for a slot, not started
        holder.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
        return list(await asyncio.gather(*jobs))

    try:
        done = asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        holder.close()
    assert done == [0, 1, 2, 3, 4] and started == [0, 1, 2, 3, 4] and most[0] == 2
