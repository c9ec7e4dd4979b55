"""The `leadpush` command as a new user meets it: create people, start the service, use their tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.api import CJK
from support.procs import clean_env, cli_create_user, leadpush, serving

# Each test runs the `leadpush` console script (and `leadpush serve`) as subprocesses: slow on a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def home(tmp_path: Path) -> tuple[dict[str, str], Path]:
    return clean_env(f"sqlite:///{tmp_path}/leadpush.db"), tmp_path


@pytest.fixture
def served(home) -> Iterator[str]:
    """`leadpush serve --port P` as its own process (the README's first command), on the same SQLite file."""
    env, cwd = home
    with serving(env, cwd) as (url, _log):
        yield url


def test_user_create_refuses_a_bad_role_or_a_taken_openid_in_chinese(home):
    env, cwd = home
    done = leadpush(env, "user", "create", "--name", "某人", "--role", "boss", "--json", cwd=cwd)
    assert done.returncode != 0 and done.stdout == ""
    assert CJK.search(done.stderr) and "角色" in done.stderr
    assert "Traceback" not in done.stderr
    cli_create_user(env, cwd, "--name", "李丽", "--role", "sales", "--wechat-openid", "o-li")
    done = leadpush(env, "user", "create", "--name", "冒名", "--role", "sales", "--wechat-openid", "o-li", cwd=cwd)
    assert done.returncode != 0 and CJK.search(done.stderr) and "Traceback" not in done.stderr


def test_tokens_from_the_cli_work_against_leadpush_serve_through_all_four_endpoints(home, served):
    env, cwd = home
    manager = cli_create_user(env, cwd, "--name", "王经理", "--role", "manager", "--team", "A")
    sales = cli_create_user(
        env, cwd, "--name", "李丽", "--role", "sales", "--team", "A", "--wechat-openid", "o-li", "--wecom-userid", "li"
    )
    assert isinstance(manager["id"], int) and isinstance(manager["token"], str) and manager["token"]
    assert sales["id"] != manager["id"] and sales["token"] != manager["token"]

    def as_(who: dict[str, Any]) -> httpx.Client:
        return httpx.Client(base_url=served, headers={"Authorization": f"Bearer {who['token']}"}, timeout=30)

    with as_(manager) as m, as_(sales) as s:
        assert m.get("/api/me").json()["data"]["name"] == "王经理"
        leads = [
            m.post("/api/customers", json={"name": f"客户{i}", "phone": f"1380013800{i}", "source": "抖音"}).json()[
                "data"
            ]["id"]
            for i in range(5)
        ]
        to = {"assignedTo": sales["id"]}
        answers = [
            m.patch(f"/api/customers/{leads[0]}/assign", json=to),
            m.patch(f"/api/customers/miniprogram/{leads[1]}/assign", json=to),
            m.post("/api/customers/batch-assign", json={"customerIds": leads[2:4], **to}),
            m.post("/api/customers/public-pool/assign", json={"customerIds": [leads[4]], **to}),
        ]
        for r in answers:
            assert r.status_code == 200 and r.json()["success"] is True, r.text
        assert answers[0].json()["data"]["notificationData"]["openid"] == "o-li"
        assert len(answers[2].json()["data"]["notificationData"]) == 1

        mine = s.get("/api/customers", params={"owner": "me"}).json()["data"]
        assert sorted(c["id"] for c in mine["items"]) == sorted(leads)
        polled = s.get("/api/notifications", params={"after": 0}).json()["data"]["items"]
        assert sorted(n["type"] for n in polled) == sorted(["customer_assigned"] * 3 + ["customers_assigned"])
        # A person created while the service runs can sign in at once.
        late = cli_create_user(env, cwd, "--name", "赵强", "--role", "sales", "--team", "A")
        with as_(late) as b:
            assert b.get("/api/me").json()["data"]["id"] == late["id"]


def test_db_upgrade_says_what_it_applied_then_that_there_is_nothing_to_do(home):
    env, cwd = home
    first = leadpush(env, "db", "upgrade", cwd=cwd)
    assert first.returncode == 0, first.stderr
    assert "已升级数据库到" in first.stdout and "0001" in first.stdout and "已是最新" not in first.stdout
    again = leadpush(env, "db", "upgrade", cwd=cwd)
    assert again.returncode == 0, again.stderr
    assert "已是最新" in again.stdout and "已升级" not in again.stdout


def test_a_worker_only_process_serves_health_and_metrics_but_not_the_api_or_console(home):
    env, cwd = home
    with serving(env, cwd, "--role", "worker", "--role", "scheduler") as (url, _log):
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        assert "leadpush_" in httpx.get(f"{url}/metrics", timeout=10).text
        for path in ("/api/me", "/api/customers", "/api/notifications", "/console", "/docs"):
            assert httpx.get(url + path, timeout=10).status_code == 404, path
