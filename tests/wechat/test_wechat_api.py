"""The mini program's calls: binding an openid with a login code, reporting subscribe results."""

from __future__ import annotations

import pytest
from support import Api
from support.channels import TEMPLATE, FakeWeChatServer

from leadpush.users.models import User


@pytest.fixture
def api(pushing: Api) -> Api:
    """Here `api` is leadpush against the shared fake WeChat server."""
    return pushing


def test_login_binds_the_openid_to_the_signed_in_user(api: Api, fake: FakeWeChatServer) -> None:
    alice = api.user("李丽")
    fake.state.register_code("code-1", "o-alice-1")
    r = api.client(alice).post("/api/wechat/login", json={"code": "code-1"})
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"userId": alice.id, "openid": "o-alice-1", "changed": True, "credits": 0}
    with api.ctx.db.read() as session:
        assert session.get(User, alice.id).wechat_openid == "o-alice-1"
    fake.state.register_code("code-2", "o-alice-1")
    again = api.client(alice).post("/api/wechat/login", json={"code": "code-2"})
    assert again.json()["data"]["changed"] is False


def test_an_openid_belongs_to_one_user_only(api: Api, fake: FakeWeChatServer) -> None:
    alice, bob = api.user("李丽"), api.user("赵强")
    fake.state.register_code("a", "o-shared")
    assert api.client(alice).post("/api/wechat/login", json={"code": "a"}).status_code == 200
    fake.state.register_code("b", "o-shared")
    r = api.client(bob).post("/api/wechat/login", json={"code": "b"})
    assert r.status_code == 409
    assert r.json()["code"] == "openid_taken"


def test_a_bad_code_is_400_and_a_flood_is_429(api: Api, fake: FakeWeChatServer) -> None:
    alice = api.user("李丽")
    r = api.client(alice).post("/api/wechat/login", json={"code": "never-issued"})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_code")
    fake.state.register_code("used", "o-x")
    api.client(alice).post("/api/wechat/login", json={"code": "used"})
    r = api.client(alice).post("/api/wechat/login", json={"code": "used"})  # codes are single-use
    assert (r.status_code, r.json()["code"]) == (400, "invalid_code")
    fake.state.add_fault("/sns/jscode2session", "errcode", errcode=45011, count=1)
    r = api.client(alice).post("/api/wechat/login", json={"code": "whatever"})
    assert (r.status_code, r.json()["code"]) == (429, "too_many_requests")
    fake.state.add_fault("/sns/jscode2session", "http", status=503, count=1)
    r = api.client(alice).post("/api/wechat/login", json={"code": "whatever"})
    assert (r.status_code, r.json()["code"]) == (502, "wechat_unavailable")


def test_login_needs_a_signed_in_user_and_a_code(api: Api) -> None:
    assert api.client().post("/api/wechat/login", json={"code": "x"}).status_code == 401
    alice = api.user("李丽")
    assert api.client(alice).post("/api/wechat/login", json={}).status_code == 422


def test_each_accept_is_one_credit(api: Api) -> None:
    alice, bob = api.user("李丽"), api.user("赵强")
    c = api.client(alice)
    r = c.post(
        "/api/wechat/subscriptions",
        json={"errMsg": "requestSubscribeMessage:ok", TEMPLATE: "accept", "TPL-other": "reject"},
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert {k: data[k] for k in ("templateId", "credits", "added")} == {
        "templateId": TEMPLATE,
        "credits": 1,
        "added": 1,
    }
    # The reject is kept too (its template's last answer; see test_subscribe_answers.py), with no credit.
    assert data["templates"] == {TEMPLATE: 1, "TPL-other": 0}
    for outcome in ("accept", "accept", "reject", "ban", "filter"):
        c.post("/api/wechat/subscriptions", json={"errMsg": "requestSubscribeMessage:ok", TEMPLATE: outcome})
    assert c.get("/api/wechat/subscriptions").json()["data"]["credits"] == 3
    # A failed call earns nothing, whatever else it says.
    r = c.post("/api/wechat/subscriptions", json={"errMsg": "requestSubscribeMessage:fail cancel", TEMPLATE: "accept"})
    assert r.json()["data"]["added"] == 0
    # Credits are per user.
    assert api.client(bob).get("/api/wechat/subscriptions").json()["data"]["credits"] == 0


def test_concurrent_reports_all_count(api: Api) -> None:
    from concurrent.futures import ThreadPoolExecutor

    alice = api.user("李丽")

    def report(_: int) -> int:
        return api.client(alice).post("/api/wechat/subscriptions", json={TEMPLATE: "accept"}).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(report, range(20))) == {200}
    assert api.client(alice).get("/api/wechat/subscriptions").json()["data"]["credits"] == 20


@pytest.mark.parametrize("body", [[TEMPLATE], "accept", {f"T{i}": "accept" for i in range(30)}])
def test_a_malformed_report_is_refused(api: Api, body: object) -> None:
    alice = api.user("李丽")
    r = api.client(alice).post("/api/wechat/subscriptions", json=body)
    assert r.status_code == 422
    assert api.client(alice).get("/api/wechat/subscriptions").json()["data"]["credits"] == 0
