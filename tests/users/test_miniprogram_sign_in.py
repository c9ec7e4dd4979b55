"""Signing in from the mini program: a wx.login code, exchanged at WeChat (the fake) for an openid, starts a
session for the person bound to that openid."""

from __future__ import annotations

import pytest
from support import Api, ok, refused
from support.channels import FakeWeChatServer


@pytest.fixture
def api(pushing: Api) -> Api:
    """Here `api` is leadpush against the shared fake WeChat server."""
    return pushing


def test_a_bound_salesperson_signs_in_with_a_login_code(api: Api, fake: FakeWeChatServer) -> None:
    alice = api.user("李丽", wechat_openid="o-alice")
    fake.state.register_code("code-1", "o-alice")
    data = ok(api.client().post("/api/auth/miniprogram", json={"code": "code-1"}))
    assert data["token"].startswith("lps_") and data["user"]["id"] == alice.id
    assert ok(api.client(data["token"]).get("/api/me"))["wechatOpenid"] == "o-alice"
    # Codes are single-use at WeChat: the same one again is refused, no session.
    r = api.client().post("/api/auth/miniprogram", json={"code": "code-1"})
    refused(r, 400, "invalid_code")
    ok(api.client(data["token"]).post("/api/auth/logout"))
    refused(api.client(data["token"]).get("/api/me"), 401, "invalid_token")


def test_an_unbound_or_deactivated_wechat_user_gets_no_session(api: Api, fake: FakeWeChatServer) -> None:
    admin = api.user("管理员", "admin", None)
    fake.state.register_code("stranger", "o-stranger")
    refused(api.client().post("/api/auth/miniprogram", json={"code": "stranger"}), 403, "wechat_not_bound")
    bob = api.user("赵强", wechat_openid="o-bob")
    ok(api.client(admin).patch(f"/api/users/{bob.id}", json={"active": False}))
    fake.state.register_code("bob", "o-bob")
    refused(api.client().post("/api/auth/miniprogram", json={"code": "bob"}), 403, "user_inactive")
    refused(api.client().post("/api/auth/miniprogram", json={}), 422, "validation_error")
