"""LEADPUSH_API_THREADS: the api role's thread pool, sized to the database pool unless set (issue 17).

Threads beyond the connections the pool keeps only hold a request (and, on PostgreSQL, a connection in a
transaction) while it waits for the GIL; the api role sizes anyio's default thread limiter at startup.
"""

from __future__ import annotations

import asyncio

import pytest
from anyio import to_thread
from pydantic import ValidationError
from support import FakeClock
from support.servers import make_settings

from leadpush.app import create_app
from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.db import Database
from leadpush.migrate import upgrade
from leadpush.startup import settings_error_lines


def threads_while_running(url: str, roles: frozenset[str], **overrides: object) -> int:
    """The default thread limiter's size inside a running app (its lifespan entered, on its own loop)."""
    ctx = AppContext.from_settings(make_settings(url, **overrides), clock=FakeClock())
    app = create_app(ctx, roles=roles)

    async def inside() -> int:
        async with app.router.lifespan_context(app):
            return int(to_thread.current_default_thread_limiter().total_tokens)

    try:
        return asyncio.run(inside())
    finally:
        ctx.db.dispose()


@pytest.fixture
def url(tmp_path) -> str:  # noqa: ANN001
    url = f"sqlite:///{tmp_path}/leadpush.db"
    upgrade(url)
    return url


def test_the_api_runs_as_many_threads_as_the_pool_keeps_connections(url: str) -> None:
    pool = Database(url)
    try:
        assert threads_while_running(url, frozenset({"api"})) == pool.pool_size == 20
    finally:
        pool.dispose()


def test_the_setting_sizes_the_api_threads(url: str) -> None:
    assert threads_while_running(url, frozenset({"api"}), api_threads=8) == 8
    assert threads_while_running(url, frozenset({"api"}), api_threads=0) == 20


def test_a_worker_alone_leaves_anyio_default(url: str) -> None:
    assert threads_while_running(url, frozenset({"worker"}), api_threads=8) == 40  # anyio's own default


@pytest.mark.parametrize(("value", "says"), [("-1", "不能小于 0"), ("41", "不能大于 40"), ("八", "必须是整数")])
def test_a_bad_value_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, value: str, says: str) -> None:
    monkeypatch.setenv("LEADPUSH_API_THREADS", value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    [line] = settings_error_lines(caught.value)
    assert line.startswith("配置错误：LEADPUSH_API_THREADS ") and says in line, line


def test_the_bound_is_the_pools_connections(url: str) -> None:
    pool = Database(url)
    try:
        bound = next(m.le for m in Settings.model_fields["api_threads"].metadata if hasattr(m, "le"))
        assert bound == pool.max_connections
    finally:
        pool.dispose()
