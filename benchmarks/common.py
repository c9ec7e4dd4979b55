"""Shared pieces of the benchmarks: processes, databases, users, a lean HTTP client, statistics, output.

Everything runs on loopback. Servers are real subprocesses (`python -m leadpush.cli serve ...`), so
the process that measures is never the process that serves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PG_ADMIN_URL = os.environ.get("LEADPUSH_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("LEADPUSH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


# --------------------------------------------------------------------------------------
# Statistics and output
# --------------------------------------------------------------------------------------


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100), linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def ms_stats(seconds: Sequence[float]) -> dict[str, float]:
    """n, p50, p99, max and mean of durations given in seconds, reported in milliseconds."""
    if not seconds:
        return {"n": 0, "p50": math.nan, "p99": math.nan, "max": math.nan, "mean": math.nan}
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50": round(pct(ms, 50), 2),
        "p99": round(pct(ms, 99), 2),
        "max": round(max(ms), 2),
        "mean": round(sum(ms) / len(ms), 2),
    }


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in cells:
        print("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    sys.stdout.flush()


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes, for development on a busy machine")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgres", "both"),
        default="both",
        help="sqlite: one process; postgres: PostgreSQL + Redis, several processes",
    )
    return parser


def backends(choice: str) -> list[str]:
    return ["sqlite", "postgres"] if choice == "both" else [choice]


def write_json(path: Path | None, result: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(result, ensure_ascii=False, indent=2, default=str))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile(wanted: int = 20_000) -> int:
    """Raise this process's soft open-files limit (children inherit it); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, wanted)) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (peak RSS) of a process, in KiB, from /proc/<pid>/status."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------


@dataclass
class Service:
    """A server subprocess with its log file; `ready_url` is polled until it answers 200."""

    name: str
    args: list[str]
    env: dict[str, str]
    port: int
    log_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_at: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self.port}.log"

    def start(self, ready_path: str = "/healthz", timeout: float = 60) -> Service:
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            self.args, env=self.env, stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
            try:
                if httpx.get(self.url + ready_path, timeout=1).status_code == 200:
                    self.ready_at = time.time()
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not become ready:\n{self.tail()}")

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def memory(self) -> dict[str, int]:
        return proc_status(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADPUSH_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), str(ROOT)) if p)
    env["LEADPUSH_LOG_LEVEL"] = "WARNING"
    return env


def leadpush_service(env: dict[str, str], log_dir: Path, roles: Sequence[str] = (), name: str = "leadpush") -> Service:
    port = free_port()
    args = [PYTHON, "-m", "leadpush.cli", "serve", "--port", str(port), "--no-migrate"]
    for role in roles:
        args += ["--role", role]
    return Service(name=name, args=args, env=env, port=port, log_dir=log_dir)


def fake_wechat_service(log_dir: Path) -> Service:
    port = free_port()
    args = [str(Path(PYTHON).parent / "leadpush-fake-wechat"), "--port", str(port)]
    return Service(name="fake-wechat", args=args, env=base_env(), port=port, log_dir=log_dir)


def floor_api_service(log_dir: Path, leads: int) -> Service:
    port = free_port()
    args = [PYTHON, "-m", "benchmarks.floor_fastapi", "--port", str(port), "--db", str(log_dir / "floor.db")]
    args += ["--leads", str(leads)]
    return Service(name="floor-fastapi", args=args, env=base_env(), port=port, log_dir=log_dir)


def floor_rows_service(log_dir: Path, url: str, actor: int, ordering: str = "lock") -> Service:
    """The second floor (benchmarks.floor_rows): an assignment's rows with the bare driver, into `url`;
    `ordering="none"` leaves out the per-recipient advisory lock (PostgreSQL)."""
    port = free_port()
    args = [PYTHON, "-m", "benchmarks.floor_rows", "--port", str(port), "--url", url, "--actor", str(actor)]
    args += ["--ordering", ordering]
    return Service(name="floor-rows", args=args, env=base_env(), port=port, log_dir=log_dir)


def floor_ws_service(log_dir: Path) -> Service:
    port = free_port()
    args = [PYTHON, "-m", "benchmarks.floor_ws", "--port", str(port)]
    return Service(name="floor-ws", args=args, env=base_env(), port=port, log_dir=log_dir)


# --------------------------------------------------------------------------------------
# Databases and deployments
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one benchmark, dropped afterwards."""
    import psycopg

    name = f"leadpush_bench_{uuid.uuid4().hex[:10]}"
    admin = PG_ADMIN_URL
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def scratch_dir(prefix: str = "leadpush-bench-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir}/leadpush.db"
    else:
        with postgres_database() as url:
            yield url


def migrate(url: str) -> None:
    from leadpush.migrate import upgrade

    upgrade(url)


@dataclass
class Deployment:
    """leadpush as it would run: SQLite in one process, or PostgreSQL + Redis in several."""

    kind: str
    db_url: str
    env: dict[str, str]
    workdir: Path
    api: list[Service] = field(default_factory=list)
    others: list[Service] = field(default_factory=list)

    @property
    def services(self) -> list[Service]:
        return self.api + self.others

    def describe(self) -> str:
        if self.kind == "sqlite":
            return "SQLite, 1 process (api + worker + scheduler)"
        return f"PostgreSQL + Redis, {len(self.api)} api + {len(self.others)} worker/scheduler processes"

    def start(self) -> Deployment:
        if self.kind == "sqlite":
            self.api = [leadpush_service(self.env, self.workdir, (), "leadpush-all")]
        else:
            self.api = [leadpush_service(self.env, self.workdir, ("api",), f"leadpush-api{i}") for i in range(2)]
            self.others = [
                leadpush_service(self.env, self.workdir, ("worker",), "leadpush-worker"),
                leadpush_service(self.env, self.workdir, ("scheduler",), "leadpush-scheduler"),
            ]
        for service in self.services:
            service.start()
        return self

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()

    def database(self):  # noqa: ANN201 - leadpush.db.Database
        from leadpush.db import Database

        return Database(self.db_url)


@contextlib.contextmanager
def deployment(kind: str, extra_env: dict[str, str] | None = None, start: bool = True) -> Iterator[Deployment]:
    """A migrated database plus (unless start=False) the leadpush processes serving it."""
    with scratch_dir() as workdir, database(kind, workdir) as url:
        env = base_env()
        env["LEADPUSH_DATABASE_URL"] = url
        if kind == "postgres":
            env["LEADPUSH_REDIS_URL"] = REDIS_URL
            env["LEADPUSH_REDIS_PREFIX"] = f"lp-bench-{uuid.uuid4().hex[:8]}"
        env.update(extra_env or {})
        migrate(url)
        dep = Deployment(kind=kind, db_url=url, env=env, workdir=workdir)
        try:
            if start:
                dep.start()
            yield dep
        finally:
            dep.stop()
            if kind == "postgres":
                forget_redis_keys(env["LEADPUSH_REDIS_PREFIX"])


def forget_redis_keys(prefix: str) -> None:
    """Delete what this run left in Redis (cached access tokens) under its own prefix."""
    import redis

    with contextlib.suppress(redis.RedisError):
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


# --------------------------------------------------------------------------------------
# Data: users (with API tokens) and leads, written straight into the database
# --------------------------------------------------------------------------------------


@dataclass
class BenchUser:
    id: int
    token: str
    role: str
    team: str | None
    wechat_openid: str | None = None
    wecom_userid: str | None = None


def make_users(db_url: str, specs: Sequence[dict[str, Any]]) -> list[BenchUser]:
    """Create users with leadpush's own models and token function, in one transaction."""
    from sqlalchemy import select

    from leadpush.db import Database
    from leadpush.teams.models import Team
    from leadpush.users.models import User
    from leadpush.users.service import issue_token

    db = Database(db_url)
    try:
        with db.write() as session:
            # users.team is a foreign key to teams.name: create the teams named that do not exist yet.
            teams = {s.get("team", "A") for s in specs} - {None}
            existing = set(session.scalars(select(Team.name).where(Team.name.in_(teams))))
            session.add_all(Team(name=t) for t in sorted(teams - existing))
            session.flush()
            users = [
                User(
                    name=s["name"],
                    role=s.get("role", "sales"),
                    team=s.get("team", "A"),
                    wechat_openid=s.get("wechat_openid"),
                    wecom_userid=s.get("wecom_userid"),
                    capacity=s.get("capacity"),
                    active=True,
                )
                for s in specs
            ]
            session.add_all(users)
            session.flush()
            tokens = [issue_token(session, u) for u in users]
            out = [
                BenchUser(u.id, t, u.role, u.team, u.wechat_openid, u.wecom_userid)
                for u, t in zip(users, tokens, strict=True)
            ]
    finally:
        db.dispose()
    return out


def make_team(
    db_url: str, sales: int, team: str = "A", wechat: bool = False, wecom: bool = False
) -> tuple[BenchUser, list[BenchUser]]:
    """A manager and `sales` salespeople of one team (optionally with WeChat openids / WeCom ids)."""
    tag = uuid.uuid4().hex[:6]
    specs: list[dict[str, Any]] = [{"name": f"经理{tag}", "role": "manager", "team": team}]
    for i in range(sales):
        spec: dict[str, Any] = {"name": f"销售{tag}-{i}", "role": "sales", "team": team}
        if wechat:
            spec["wechat_openid"] = f"o{tag}{i:06d}"
        if wecom:
            spec["wecom_userid"] = f"u{tag}{i:06d}"
        specs.append(spec)
    users = make_users(db_url, specs)
    return users[0], users[1:]


def make_leads(db_url: str, count: int, owner_id: int | None = None, prefix: str = "Bench") -> list[int]:
    """Insert `count` leads (in the public pool unless owner_id) in one bulk insert; returns their ids."""
    from datetime import UTC, datetime

    from sqlalchemy import insert, select

    from leadpush.db import Database
    from leadpush.leads.models import Customer

    db = Database(db_url)
    now = datetime.now(UTC)
    tag = uuid.uuid4().hex[:6]
    try:
        with db.write() as session:
            session.execute(
                insert(Customer),
                [
                    {
                        "name": f"{prefix}{tag}-{i}",
                        "phone": f"138{i:08d}",
                        "source": "bench",
                        "status": "new",
                        "note": "",
                        "owner_id": owner_id,
                        "assigned_at": now if owner_id else None,
                        "version": 1,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in range(count)
                ],
            )
            ids = list(
                session.scalars(select(Customer.id).where(Customer.name.like(f"{prefix}{tag}-%")).order_by(Customer.id))
            )
    finally:
        db.dispose()
    return ids


# --------------------------------------------------------------------------------------
# A lean keep-alive HTTP/1.1 client (so the load generator spends little of the two cores)
# --------------------------------------------------------------------------------------


class HttpConnection:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, dict[str, Any] | None]:
        for attempt in (0, 1):
            if self.writer is None:
                await self._open()
            try:
                return await self._request(method, path, body, token)
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _request(self, method: str, path: str, body: Any, token: str | None) -> tuple[int, dict[str, Any] | None]:
        assert self.reader is not None and self.writer is not None
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        head += f"Content-Length: {len(payload)}\r\n\r\n"
        self.writer.write(head.encode() + payload)
        raw_head = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                if size == 0:
                    await self.reader.readline()
                    break
                chunks.append(await self.reader.readexactly(size))
                await self.reader.readline()
            data = b"".join(chunks)
        else:
            data = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, (json.loads(data) if data else None)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def host_port(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[1].rstrip("/")
    host, _, port = rest.partition(":")
    return host, int(port)


def sync_client(url: str, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=120)


def check(response: httpx.Response) -> Any:
    if response.status_code >= 300:
        raise RuntimeError(
            f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text}"
        )
    body = response.json()
    return body.get("data") if isinstance(body, dict) and "success" in body else body


def versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform
    import sqlite3

    out = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for dist in (
        "leadpush",
        "fastapi",
        "starlette",
        "uvicorn",
        "sqlalchemy",
        "psycopg",
        "websockets",
        "redis",
        "httpx",
    ):
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    return out


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem_kb / 1024 / 1024, 1)}


def ledger_counts(db_url: str) -> dict[str, int]:
    """How many notifications and deliveries the ledger holds (before and after a burst)."""
    from sqlalchemy import func, select

    from leadpush.db import Database
    from leadpush.notify.models import Delivery, Notification

    db = Database(db_url)
    try:
        with db.read() as session:
            return {
                "notifications": session.scalar(select(func.count()).select_from(Notification)) or 0,
                "deliveries": session.scalar(select(func.count()).select_from(Delivery)) or 0,
            }
    finally:
        db.dispose()
