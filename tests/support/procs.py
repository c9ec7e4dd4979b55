"""Real leadpush processes for tests: `leadpush serve` as a subprocess, a cluster of them over the real
PostgreSQL and Redis, the `leadpush` console script as a new user runs it, and a private redis-server.

A pytest plugin (registered in conftest.py): the `cluster` fixture.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.migrate import upgrade
from leadpush.users.service import create_user
from support.databases import REDIS_URL, postgres_database, require_redis, unavailable
from support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
LEADPUSH = str(Path(sys.executable).with_name("leadpush"))


# A start is ~3 s of CPU (imports, migrations): on a busy 2-core machine (load 13, seen) it took over 30 s. This is
# a wait for a condition (/healthz answers), so a generous bound costs nothing when the process is quick.
START_TIMEOUT = 90.0


class LeadpushProcess:
    """`python -m leadpush.cli serve` with the given roles and LEADPUSH_* environment."""

    def __init__(self, env: dict[str, str], roles: tuple[str, ...] = (), log_dir: Path | None = None, name: str = "lp"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **env}
        self.roles = roles
        self.log_path = (log_dir or Path("/tmp")) / f"{name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = START_TIMEOUT) -> LeadpushProcess:
        args = [sys.executable, "-m", "leadpush.cli", "serve", "--port", str(self.port)]
        for role in self.roles:
            args += ["--role", role]
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"leadpush exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"leadpush did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill9()


class PrivateRedis:
    """A redis-server of our own on a free port, so a test may stop and restart it."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            unavailable("redis-server is not installed; the Redis restart test needs it")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    client.close()
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


class Cluster:
    """Several `leadpush serve` processes (any roles) sharing one PostgreSQL database and Redis."""

    def __init__(self, db_url: str, redis_url: str, tmp_path: Path) -> None:
        self.env = {
            "LEADPUSH_DATABASE_URL": db_url,
            "LEADPUSH_REDIS_URL": redis_url,
            "LEADPUSH_REDIS_PREFIX": "lp-test-" + uuid.uuid4().hex[:8],
            "LEADPUSH_DELIVERY_POLL_INTERVAL": "1",
            "LEADPUSH_DELIVERY_BACKOFF_BASE": "0.5",
            "LEADPUSH_LOG_LEVEL": "WARNING",
        }
        self.tmp_path = tmp_path
        self.procs: list[LeadpushProcess] = []
        upgrade(db_url)
        self.ctx = AppContext.from_settings(Settings(database_url=db_url))

    def spawn(self, *roles: str, name: str) -> LeadpushProcess:
        proc = LeadpushProcess(self.env, roles, self.tmp_path, name)
        self.procs.append(proc)
        return proc.start()

    def user(self, name: str, role: str = "sales", team: str = "A") -> tuple[int, str]:
        with self.ctx.db.write() as session:
            user, token = create_user(session, name=name, role=role, team=team, create_missing_team=True)
            return user.id, token

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        self.ctx.db.dispose()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    require_redis(REDIS_URL)
    with postgres_database() as db_url:
        c = Cluster(db_url, REDIS_URL, tmp_path)
        try:
            yield c
        finally:
            c.close()


# --------------------------------------------------------------------------------------
# The `leadpush` console script, as a new user or an operator runs it
# --------------------------------------------------------------------------------------


def clean_env(db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADPUSH_")}
    env["LEADPUSH_DATABASE_URL"] = db_url
    return env


def leadpush(env: dict[str, str], *args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run the `leadpush` command (what is typed at its prompts given as `stdin`)."""
    return subprocess.run([LEADPUSH, *args], env=env, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=60)


def cli_create_user(env: dict[str, str], cwd: Path, *args: str) -> dict[str, Any]:
    """`leadpush user create ... --json`; the person it printed."""
    done = leadpush(env, "user", "create", *args, "--json", cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@contextmanager
def serving(env: dict[str, str], cwd: Path, *args: str, name: str = "serve") -> Iterator[tuple[str, Path]]:
    """`leadpush serve --port P [args]` as its own process until the block ends; yields its URL and log file."""
    port = free_port()
    log_path = cwd / f"{name}.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([LEADPUSH, "serve", "--port", str(port), *args], env=env, cwd=cwd, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "leadpush serve did not answer:\n" + log_path.read_text()
            time.sleep(0.1)
        yield url, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def build_wheel(tmp_path: Path) -> Path:
    """The product wheel, built from what the image's Dockerfile copies (pyproject.toml, README.md, src/), in a clean tree."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path / "wheel"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(tree)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = out.glob("leadpush-*.whl")
    return wheel
