"""The pool pings a PostgreSQL connection before handing it out only when it has been idle for a while
(`leadpush.db.PING_IDLE_AFTER`), not at every checkout (issue 17): a connection given back a moment ago is
alive, and the ping was one of an assignment's six round trips on PostgreSQL, ~0.15 ms of the api process's CPU
each time. One idle longer is pinged, and a dead one is replaced before anything runs on it — on the
worker-thread engine and on the event loop's (`Database.on_loop`) alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from support.servers import bare_context
from support.waiting import wait_for

import leadpush.db
from leadpush.context import AppContext


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppContext]:
    with bare_context("postgres", str(tmp_path_factory.mktemp("poolping"))) as ctx:
        yield ctx


@pytest.fixture
def pings(pg: AppContext, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every ping the pools send (the dialects' own `do_ping`, counted)."""
    seen: list[Any] = []
    # The classes that define the `do_ping` each engine's dialect uses (once each: the asyncio dialect may be
    # a subclass of the other).
    defining = {next(k for k in type(e.dialect).__mro__ if "do_ping" in vars(k)) for e in pg.db.engines}
    for dialect in defining:
        real = vars(dialect)["do_ping"]

        def counted(self: Any, dbapi_connection: Any, real: Callable[..., bool] = real) -> bool:
            seen.append(dbapi_connection)
            return real(self, dbapi_connection)

        monkeypatch.setattr(dialect, "do_ping", counted)
    return seen


def backend_pid(ctx: AppContext) -> int:
    with ctx.db.write() as session:
        return int(session.scalar(text("SELECT pg_backend_pid()")))


def backend_pid_on_loop(ctx: AppContext) -> int:
    return asyncio.run(ctx.db.on_loop(backend_pid, ctx))


def terminate(ctx: AppContext, pid: int) -> None:
    url = ctx.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        # Gone once the server no longer lists it.
        wait_for(lambda: not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone())


@pytest.mark.parametrize("run", [backend_pid, backend_pid_on_loop], ids=["thread", "loop"])
def test_a_connection_given_back_a_moment_ago_is_not_pinged(
    pg: AppContext, pings: list[Any], monkeypatch: pytest.MonkeyPatch, run: Callable[[AppContext], int]
) -> None:
    monkeypatch.setattr(leadpush.db, "PING_IDLE_AFTER", 3600.0, raising=False)
    first = run(pg)
    again = [run(pg) for _ in range(5)]
    assert again == [first] * 5  # the same connection each time...
    assert pings == []  # ... and never pinged


@pytest.mark.parametrize("run", [backend_pid, backend_pid_on_loop], ids=["thread", "loop"])
def test_an_idle_connection_is_pinged_and_a_dead_one_replaced_unseen(
    pg: AppContext, pings: list[Any], monkeypatch: pytest.MonkeyPatch, run: Callable[[AppContext], int]
) -> None:
    monkeypatch.setattr(
        leadpush.db, "PING_IDLE_AFTER", 0.0, raising=False
    )  # every connection given back counts as idle
    first = run(pg)
    pings.clear()  # (that checkout may have pinged a connection an earlier test gave back)
    assert run(pg) == first and len(pings) == 1
    terminate(pg, first)
    replaced = run(pg)  # no error: the ping found it dead and the pool opened another
    assert replaced != first
    assert len(pings) >= 2
