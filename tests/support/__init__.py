"""Test support: real databases (SQLite file, PostgreSQL), a real uvicorn server, real HTTP clients."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, text

from leadpush.app import create_app
from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.migrate import upgrade
from leadpush.models import Base
from leadpush.ratelimit import RateLimiter
from leadpush.users.service import create_user

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get("LEADPUSH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("LEADPUSH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_unavailable(what: str, error: Exception) -> None:
    message = f"{what} is not reachable ({error}); start it (see README) to run these tests"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def try_start_postgres() -> None:
    subprocess.run(
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
        shell=True,
        capture_output=True,
        timeout=60,
    )


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database for this test run, dropped afterwards."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        try:
            conn = admin.connect()
        except Exception:
            try_start_postgres()
            time.sleep(2)
            conn = admin.connect()
    except Exception as exc:  # noqa: BLE001
        service_unavailable("PostgreSQL", exc)
    name = f"leadpush_test_{uuid.uuid4().hex[:10]}"
    conn.execute(text(f'CREATE DATABASE "{name}"'))
    conn.close()
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def database_url(kind: str, tmp_dir: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_dir}/leadpush.db"
    else:
        with postgres_database() as url:
            yield url


def wipe(ctx: AppContext) -> None:
    """Empty every table between tests (the schema stays, built once by the real migrations)."""
    ctx.limiter = RateLimiter(ctx.settings.redis_url, ctx.settings.redis_prefix)
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with ctx.db.engine.begin() as conn:
        if ctx.db.is_postgres:
            conn.execute(text("TRUNCATE " + ", ".join(tables) + " RESTART IDENTITY CASCADE"))
        else:
            for t in tables:
                conn.execute(text(f"DELETE FROM {t}"))


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
        self.port = port or free_port()
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
        self.thread = threading.Thread(target=self.server.run, daemon=True)

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


@dataclass
class Person:
    id: int
    token: str
    name: str
    role: str
    team: str | None


@dataclass
class Api:
    """What a test drives: a running leadpush on loopback and helpers to act as its users."""

    url: str
    ctx: AppContext
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, who: Person | str | None = None) -> httpx.Client:
        token = who.token if isinstance(who, Person) else who
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        c = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        self.clients.append(c)
        return c

    def user(self, name: str, role: str = "sales", team: str | None = "A", **kw: Any) -> Person:
        with self.ctx.db.write() as session:
            user, token = create_user(session, name=name, role=role, team=team, **kw)
            return Person(user.id, token, name, role, team)

    def lead(
        self, who: Person, name: str = "张三", phone: str = "13800138000", source: str = "抖音广告", **kw: Any
    ) -> dict:
        r = self.client(who).post("/api/customers", json={"name": name, "phone": phone, "source": source, **kw})
        assert r.status_code == 201, r.text
        return r.json()["data"]

    def close(self) -> None:
        for c in self.clients:
            c.close()
        self.clients.clear()


def make_settings(url: str, **overrides: Any) -> Settings:
    # Tests knock with bad tokens on purpose, many times a minute; the limit has its own test.
    overrides.setdefault("auth_failures_per_minute", 100_000)
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
