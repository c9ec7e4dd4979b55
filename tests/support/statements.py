"""Watching the statements an engine runs: for tests that count or read them."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import event

from leadpush.app import create_app
from leadpush.context import AppContext
from leadpush.migrate import upgrade
from support.databases import database_url
from support.servers import FakeClock, ServerThread, make_settings


@contextmanager
def listening(ctx: AppContext, **listeners: Callable[..., Any]) -> Iterator[None]:
    """`listeners` (event name → function) on every engine of the context's database: the sync one and, on
    PostgreSQL, the asyncio one the assignment routes run on (`Database.on_loop`)."""
    pairs = [(engine, name, fn) for engine in ctx.db.engines for name, fn in listeners.items()]
    for engine, name, fn in pairs:
        event.listen(engine, name, fn)
    try:
        yield
    finally:
        for engine, name, fn in pairs:
            event.remove(engine, name, fn)


class Statements:
    """Every statement the engine runs while `on` is set (whitespace folded, the first 120 characters)."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.on = False
        self.seen: list[str] = []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if self.on:
            self.seen.append(" ".join(statement.split())[:120])

    def __enter__(self) -> Statements:
        self._listening = listening(self.ctx, before_cursor_execute=self)
        self._listening.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._listening.__exit__(*exc)


T = TypeVar("T")


class PerRequest:
    """The app with a fresh list per HTTP request in `var`, seen by every thread the request runs in (anyio
    runs a worker thread in a copy of the request's context): `requests` holds ("METHOD /path", list)."""

    def __init__(self, app: Any, var: contextvars.ContextVar[list[str] | None]) -> None:
        self.app = app
        self.var = var
        self.requests: list[tuple[str, list[str]]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen: list[str] = []
        self.requests.append((f"{scope['method']} {scope['path']}", seen))
        token = self.var.set(seen)
        try:
            await self.app(scope, receive, send)
        finally:
            self.var.reset(token)

    def during(self, what: str, call: Callable[[], T]) -> tuple[T, list[str]]:
        """`call()`'s value and the list of the one request `what` ("METHOD /path") it made."""
        since = len(self.requests)
        value = call()
        [seen] = [seen for made, seen in self.requests[since:] if made == what]
        return value, seen


_per_request: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("support_statements", default=None)


def _record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
    seen = _per_request.get()
    if seen is not None:
        seen.append(" ".join(statement.split()))


@contextmanager
def statements_per_request(kind: str, directory: str) -> Iterator[tuple[AppContext, ServerThread, PerRequest]]:
    """A served app (api and worker roles) on a fresh `kind` database whose `PerRequest` lists the statements
    each HTTP request ran. The token and rule copies are kept a minute: on a loaded machine two requests may
    be more than the default seconds apart, and a count is not a timing test."""
    gen = database_url(kind, directory)
    url = next(gen)
    upgrade(url)
    ctx = AppContext.from_settings(make_settings(url, auth_cache_seconds=60, rule_cache_seconds=60), clock=FakeClock())
    app = PerRequest(create_app(ctx, roles=frozenset({"api", "worker"})), _per_request)
    server = ServerThread(app, ws_max_size=ctx.settings.ws_max_message_bytes).start()
    try:
        with listening(ctx, before_cursor_execute=_record):
            yield ctx, server, app
    finally:
        server.stop()
        ctx.db.dispose()
        gen.close()
