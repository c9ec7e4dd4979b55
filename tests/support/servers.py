"""A real leadpush in the test process: uvicorn on a loopback port in a thread, over a real database."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import uvicorn

from leadpush.app import create_app
from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.migrate import upgrade
from support.databases import DATABASES, database_url

NO_SCHEDULER = "no-scheduler"
# The service without its scheduler role, as `leadpush serve --role api` and `--role worker` run it: a transfer
# run happens only when the test starts one, so the test knows which run found (or moved) a lead.
WITHOUT_SCHEDULER = pytest.mark.parametrize("stack", [f"{kind}/{NO_SCHEDULER}" for kind in DATABASES], indirect=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, **kwargs: float) -> datetime:
        with self._lock:
            self._now += timedelta(**kwargs)
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when


class ServerThread:
    """A real uvicorn server on a loopback port, in a background thread."""

    def __init__(
        self, app: Any, port: int | None = None, log_level: str = "warning", ws_max_size: int = 16 * 1024 * 1024
    ) -> None:
        # The listening socket is bound here and handed to uvicorn: no other process (another pytest-xdist
        # worker, a client's ephemeral port) can take the port between picking it and listening on it.
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", port or 0))
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level=log_level,
            ws_ping_interval=None,
            ws_max_size=ws_max_size,
            timeout_graceful_shutdown=3,
            # The app applies LEADPUSH_TRUSTED_PROXIES itself, as under `leadpush serve`.
            proxy_headers=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.socket.close()


def make_settings(url: str, **overrides: Any) -> Settings:
    # Tests knock with bad tokens on purpose, many times a minute; the limit has its own test.
    overrides.setdefault("auth_failures_per_minute", 100_000)
    # Most tests count one message per notice; digests have their own tests, which set a window.
    overrides.setdefault("digest_window_wechat", 0)
    overrides.setdefault("digest_window_wecom", 0)
    # The gc policy is process-wide (gc.freeze, thresholds, gc.callbacks) and a test process runs several
    # stacks beside unit tests of that policy: its tests start their own policy, or a `leadpush serve`.
    overrides.setdefault("gc_freeze_min_sockets", 0)
    return Settings(database_url=url, **overrides)


def start_stack(
    url: str,
    roles: frozenset[str] = frozenset({"api", "worker", "scheduler"}),
    clock: Any = None,
    server_log_level: str = "warning",
    **overrides: Any,
):
    upgrade(url)
    ctx = AppContext.from_settings(make_settings(url, **overrides), clock=clock or FakeClock())
    server = ServerThread(
        create_app(ctx, roles=roles), log_level=server_log_level, ws_max_size=ctx.settings.ws_max_message_bytes
    ).start()
    return ctx, server


@contextmanager
def running_stack(kind: str, tmp_dir: str, **kw: Any) -> Iterator[tuple[AppContext, ServerThread]]:
    """`start_stack` on a fresh `kind` (sqlite | postgres) database until the block ends."""
    gen = database_url(kind, tmp_dir)
    url = next(gen)
    ctx, server = start_stack(url, **kw)
    try:
        yield ctx, server
    finally:
        server.stop()
        ctx.db.dispose()
        gen.close()


@contextmanager
def inapp_left_to_the_worker(ctx: AppContext) -> Iterator[None]:
    """While in the block, what `ctx`'s process commits keeps its in-app deliveries pending for a worker, as
    a process that does not push its commits (`leadpush transfer run`, a script) leaves them: for tests of
    the worker's in-app channel. (The running api process pushes its commits and writes those rows sent.)"""
    pushers = ctx.signals._pushers
    ctx.signals._pushers = []
    try:
        yield
    finally:
        ctx.signals._pushers = pushers


@contextmanager
def bare_context(kind: str, tmp_dir: str) -> Iterator[AppContext]:
    """A migrated `kind` (sqlite | postgres) database and an AppContext on it (a fake clock), no server: for
    tests that call leadpush's functions directly."""
    gen = database_url(kind, tmp_dir)
    url = next(gen)
    upgrade(url)
    context = AppContext.from_settings(make_settings(url), clock=FakeClock())
    try:
        yield context
    finally:
        context.db.dispose()
        gen.close()
