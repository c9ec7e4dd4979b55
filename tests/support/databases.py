"""The outside services tests run on: a SQLite file or a fresh PostgreSQL database, and Redis.

A service that is not reachable skips its tests on a laptop and fails them in CI (CI=true), so CI
never passes by skipping.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from leadpush.context import AppContext
from leadpush.models import Base
from leadpush.ratelimit import RateLimiter
from leadpush.users.sessions import TokenUses

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get("LEADPUSH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("LEADPUSH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# The databases every API test runs on. CI sets nothing and runs both; `make quick` runs SQLite only.
DATABASES = tuple(os.environ.get("LEADPUSH_TEST_DATABASES", "sqlite,postgres").replace(" ", "").split(","))


def unavailable(message: str) -> None:
    """Something a test needs is missing: skip here, fail in CI."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def service_unavailable(what: str, error: Exception | str) -> None:
    unavailable(f"{what} is not reachable ({error}); start it (see README) to run these tests")


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


def require_redis(url: str) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        service_unavailable("Redis", exc)


def reset_limits(ctx: AppContext) -> None:
    """Forget what earlier calls counted towards the rate limits and the token-use records."""
    ctx.limiter = RateLimiter(ctx.settings.redis_url, ctx.settings.redis_prefix)
    ctx.token_uses = TokenUses()


def wipe(ctx: AppContext) -> None:
    """Empty every table between tests (the schema stays, built once by the real migrations)."""
    reset_limits(ctx)
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    for attempt in range(5):
        try:
            with ctx.db.engine.begin() as conn:
                if ctx.db.is_postgres:
                    conn.execute(text("TRUNCATE " + ", ".join(tables) + " RESTART IDENTITY CASCADE"))
                else:
                    for t in tables:
                        conn.execute(text(f"DELETE FROM {t}"))
            return
        except OperationalError as exc:
            # The stack's own workers keep running between tests (a delivery's outcome, a scheduler look):
            # PostgreSQL may pick the TRUNCATE, which locks every table, as a deadlock's victim. Try again.
            if attempt == 4 or "deadlock" not in str(exc).lower():
                raise
