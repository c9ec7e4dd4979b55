"""Start-up as an operator meets it: a wrong setting, an unreachable database or a busy port is one Chinese line.

Every test runs the real `leadpush` console script as a subprocess and reads what a person reads: the exit
status and stderr. Nothing may start (no migration, no role) before the problem is reported.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import httpx
import pytest
from support import free_port
from support.api import CJK
from support.procs import LEADPUSH, clean_env, leadpush, serving

# Each test runs the `leadpush` console script as a subprocess, some `leadpush serve` twice: ~55 s on a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# A PostgreSQL address where nothing listens (a port just released by free_port).
UNREACHABLE_PG = "postgresql://postgres:pw-not-shown@127.0.0.1:{port}/leadpush"


def one_chinese_line(done: subprocess.CompletedProcess[str]) -> str:
    """The answer to a start-up problem: a non-zero exit and exactly one Chinese line on stderr."""
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert CJK.search(lines[0]), done.stderr
    return lines[0]


def serve(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`leadpush serve` that is expected to stop by itself (it must refuse to start)."""
    return subprocess.run([LEADPUSH, "serve", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def home(tmp_path: Path) -> tuple[dict[str, str], Path]:
    return clean_env(f"sqlite:///{tmp_path}/leadpush.db"), tmp_path


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("LEADPUSH_PORT", "abc", "abc"),
        ("LEADPUSH_PORT", "70000", "70000"),
        ("LEADPUSH_DATABASE_URL", "foo://somewhere/db", "foo"),
        ("LEADPUSH_DATABASE_URL", "::::", "::::"),
        ("LEADPUSH_WECHAT_MINIPROGRAM_STATE", "prod", "prod"),
        ("LEADPUSH_DELIVERY_MAX_ATTEMPTS", "many", "many"),
        ("LEADPUSH_LOG_LEVEL", "chatty", "chatty"),
    ],
)
def test_a_bad_setting_is_one_chinese_line_naming_the_variable(home, name, value, shown):
    env, cwd = home
    line = one_chinese_line(serve({**env, name: value}, cwd))
    assert name in line and shown in line and "配置错误" in line
    assert not (cwd / "leadpush.db").exists(), "nothing may start before the settings are valid"


def test_each_bad_setting_gets_its_own_line_and_passwords_stay_hidden(home):
    env, cwd = home
    env = {**env, "LEADPUSH_PORT": "abc", "LEADPUSH_DATABASE_URL": "mysql://app:hunter2-secret@db/leadpush"}
    done = serve(env, cwd)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2, done.stderr
    assert any("LEADPUSH_PORT" in ln for ln in lines) and any("LEADPUSH_DATABASE_URL" in ln for ln in lines)
    assert all(CJK.search(ln) for ln in lines)
    assert "hunter2-secret" not in done.stderr


@pytest.mark.parametrize("command", ["serve", "db upgrade", "user create", "transfer run"])
@pytest.mark.parametrize("where", ["postgres", "sqlite"])
def test_an_unreachable_database_is_one_chinese_line_for_every_command(home, command, where):
    env, cwd = home
    url = UNREACHABLE_PG.format(port=free_port()) if where == "postgres" else f"sqlite:///{cwd}/no/such/dir/x.db"
    args = command.split()
    if command == "user create":
        args += ["--name", "李丽", "--role", "sales"]
    done = subprocess.run(
        [LEADPUSH, *args, *(["--port", str(free_port())] if command == "serve" else [])],
        env={**env, "LEADPUSH_DATABASE_URL": url},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
    )
    line = one_chinese_line(done)
    assert "数据库" in line and "LEADPUSH_DATABASE_URL" in line
    assert "pw-not-shown" not in done.stderr


def test_a_port_in_use_is_reported_before_anything_starts(home):
    env, cwd = home
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve({**env, "LEADPUSH_LOG_LEVEL": "INFO"}, cwd, "--port", str(port))
    line = one_chinese_line(done)
    assert str(port) in line and "端口" in line
    # No role started: the database was not even created (it is migrated before the roles start).
    assert not (cwd / "leadpush.db").exists()


def test_a_second_process_on_one_sqlite_file_without_redis_refuses_to_start(home):
    env, cwd = home
    with serving(env, cwd, name="first"):
        line = one_chinese_line(serve(env, cwd, "--port", str(free_port())))
        assert "LEADPUSH_REDIS_URL" in line
        # One-shot commands may still use the file while it serves.
        made = leadpush(env, "user", "create", "--name", "李丽", "--role", "sales", cwd=cwd)
        assert made.returncode == 0, made.stderr
    # Once the first one is gone, the file is free again.
    with serving(env, cwd, name="second") as (url, _log):
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200


def test_a_start_logs_which_migrations_it_applied_and_no_alembic_chatter(home):
    env, cwd = home
    with serving({**env, "LEADPUSH_LOG_LEVEL": "INFO"}, cwd, name="fresh") as (_url, log_path):
        pass
    log = log_path.read_text()
    assert "Context impl" not in log and "transactional DDL" not in log and "setup plugin" not in log, log
    assert len([ln for ln in log.splitlines() if "迁移" in ln]) == 1, log
    with serving({**env, "LEADPUSH_LOG_LEVEL": "INFO"}, cwd, name="again") as (_url, log_path):
        pass
    assert "迁移" not in log_path.read_text(), "nothing to apply, nothing to say"


def test_serving_an_unmigrated_database_without_migrating_says_to_migrate_first(home):
    env, cwd = home
    line = one_chinese_line(serve(env, cwd, "--no-migrate", "--port", str(free_port())))
    assert "leadpush db upgrade" in line
    assert leadpush(env, "db", "upgrade", cwd=cwd).returncode == 0
    with serving(env, cwd, "--no-migrate", name="migrated") as (url, _log):
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
