"""Passwords and tokens from the command line: an operator creates a person with a password, and a locked-out
admin gets back in with an API token or a password reset."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update
from support.api import CJK
from support.procs import clean_env, leadpush, serving

from leadpush.clock import utcnow
from leadpush.db import Database
from leadpush.users.models import User

# Subprocesses: a dozen console-script runs and a `leadpush serve` take ~95 s on a busy machine (load 13, seen).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def home(tmp_path: Path) -> tuple[dict[str, str], Path]:
    return clean_env(f"sqlite:///{tmp_path}/leadpush.db"), tmp_path


def sign_in(url: str, login_name: str, password: str) -> httpx.Response:
    return httpx.post(f"{url}/api/auth/login", json={"loginName": login_name, "password": password}, timeout=30)


def test_a_locked_out_admin_gets_back_in_from_the_command_line(home):
    env, cwd = home
    # Typed twice at the prompt; a mismatch or a weak password creates nobody.
    typo = leadpush(
        env,
        "user",
        "create",
        "--name",
        "管理员",
        "--role",
        "admin",
        "--login",
        "admin",
        "--password",
        cwd=cwd,
        stdin="first-pass-1\nfirst-pass-2\n",
    )
    assert typo.returncode == 2 and "不一致" in typo.stderr
    done = leadpush(
        env,
        "user",
        "create",
        "--name",
        "管理员",
        "--role",
        "admin",
        "--login",
        "admin",
        "--password",
        "--json",
        cwd=cwd,
        stdin="first-pass-1\nfirst-pass-1\n",
    )
    assert done.returncode == 0, done.stderr
    admin = json.loads(done.stdout)
    assert set(admin) == {"id", "name", "role", "team", "token"}  # the output shape others rely on
    assert "first-pass" not in done.stdout
    weak = leadpush(
        env,
        "user",
        "create",
        "--name",
        "某人",
        "--role",
        "sales",
        "--login",
        "e7",
        "--password-stdin",
        cwd=cwd,
        stdin="12345678\n",
    )
    assert weak.returncode == 2 and "全是数字" in weak.stderr and "Traceback" not in weak.stderr
    made = leadpush(
        env,
        "user",
        "create",
        "--name",
        "李丽",
        "--role",
        "sales",
        "--login",
        "13800000001",
        "--password-stdin",
        "--json",
        cwd=cwd,
        stdin="li-li-2026\n",
    )
    assert made.returncode == 0, made.stderr

    with serving(env, cwd) as (url, _log):
        assert sign_in(url, "13800000001", "li-li-2026").status_code == 200
        first = sign_in(url, "admin", "first-pass-1")
        assert first.status_code == 200, first.text
        session = first.json()["data"]["token"]
        # Locked out (as after twenty failures).
        db = Database(env["LEADPUSH_DATABASE_URL"])
        with db.write() as s:
            s.execute(update(User).where(User.id == admin["id"]).values(locked_until=utcnow() + timedelta(minutes=15)))
        db.dispose()
        locked = sign_in(url, "admin", "first-pass-1")
        assert locked.status_code == 429 and locked.json()["code"] == "account_locked"

        # An API token from the command line works regardless of the lock.
        issued = leadpush(env, "token", "issue", "--user", str(admin["id"]), "--name", "救急", "--json", cwd=cwd)
        assert issued.returncode == 0, issued.stderr
        token = json.loads(issued.stdout)
        assert token["name"] == "救急" and token["userId"] == admin["id"] and token["token"].startswith("lp_")
        me = httpx.get(f"{url}/api/me", headers={"Authorization": f"Bearer {token['token']}"}, timeout=30)
        assert me.status_code == 200 and me.json()["data"]["lockedUntil"] is not None
        plain = leadpush(env, "token", "issue", "--user", str(admin["id"]), "--name", "备用", cwd=cwd)
        assert plain.returncode == 0 and "lp_" in plain.stdout and CJK.search(plain.stdout)

        # A generated password, shown once: the lock is lifted and the old session ended.
        reset = leadpush(env, "user", "reset-password", "--login", "admin", "--generate", cwd=cwd)
        assert reset.returncode == 0, reset.stderr
        assert "结束了 1 个登录会话" in reset.stdout
        generated = re.search(r"新密码：(\S+)", reset.stdout)
        assert generated is not None
        assert sign_in(url, "admin", generated.group(1)).status_code == 200
        gone = httpx.get(f"{url}/api/me", headers={"Authorization": f"Bearer {session}"}, timeout=30)
        assert gone.status_code == 401
        # Typed at the prompt, by id.
        again = leadpush(
            env, "user", "reset-password", "--id", str(admin["id"]), cwd=cwd, stdin="third-pass-3\nthird-pass-3\n"
        )
        assert again.returncode == 0, again.stderr
        assert sign_in(url, "admin", "third-pass-3").status_code == 200
        assert sign_in(url, "admin", generated.group(1)).status_code == 401

    for args in (
        ("user", "reset-password", "--login", "nobody", "--generate"),
        ("user", "reset-password", "--generate"),
        ("token", "issue", "--user", "98765", "--name", "x"),
        ("token", "issue", "--user", str(admin["id"]), "--name", " "),
    ):
        done = leadpush(env, *args, cwd=cwd)
        assert done.returncode == 2 and CJK.search(done.stderr) and "Traceback" not in done.stderr, (args, done)
