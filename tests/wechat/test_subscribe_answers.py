"""The answers of wx.requestSubscribeMessage are kept per template (accept / reject / ban / filter), and the
credits endpoint tells the mini program what to ask of the user: re-enable in the settings after a ban,
ask again after a reject / filter or when no credit is left. Over real HTTP, SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime

import pytest
from support import Api, ok
from support.channels import TEMPLATE

OK = "requestSubscribeMessage:ok"


@pytest.fixture
def api(pushing: Api) -> Api:
    return pushing


def mine(api: Api, who: object) -> dict:
    return ok(api.client(who).get("/api/wechat/subscriptions"))  # type: ignore[arg-type]


def test_a_ban_is_kept_and_the_user_is_told_to_re_enable_in_the_settings(api: Api) -> None:
    alice = api.user("李丽")
    c = api.client(alice)
    ok(c.post("/api/wechat/subscriptions", json={"errMsg": OK, TEMPLATE: "accept"}))
    answer = ok(c.post("/api/wechat/subscriptions", json={"errMsg": OK, TEMPLATE: "ban"}))
    assert answer["added"] == 0 and answer["credits"] == 1
    assert answer["prompt"] == "enable_in_settings"

    data = mine(api, alice)
    sub = data["subscriptions"][TEMPLATE]
    assert sub["credits"] == 1
    assert sub["lastResult"] == "ban"
    assert datetime.fromisoformat(sub["lastResultAt"].replace("Z", "+00:00")).tzinfo is not None
    assert sub["prompt"] == "enable_in_settings"
    assert "设置" in sub["hint"] and "订阅消息" in sub["hint"]
    # The deployment's template, at the top level too: what the client acts on.
    assert data["prompt"] == "enable_in_settings" and data["hint"] == sub["hint"]


@pytest.mark.parametrize("answer", ["reject", "filter"])
def test_a_reject_or_filter_asks_again(api: Api, answer: str) -> None:
    alice = api.user("李丽")
    c = api.client(alice)
    ok(c.post("/api/wechat/subscriptions", json={"errMsg": OK, TEMPLATE: "accept"}))
    ok(c.post("/api/wechat/subscriptions", json={"errMsg": OK, TEMPLATE: answer}))
    data = mine(api, alice)
    assert data["credits"] == 1
    assert data["subscriptions"][TEMPLATE]["lastResult"] == answer
    assert data["prompt"] == "ask_again"
    assert "允许" in data["hint"]


def test_an_accept_after_a_ban_clears_the_prompt_and_counts_a_credit(api: Api) -> None:
    alice = api.user("李丽")
    c = api.client(alice)
    ok(c.post("/api/wechat/subscriptions", json={"errMsg": OK, TEMPLATE: "ban"}))
    assert mine(api, alice)["prompt"] == "enable_in_settings"
    answer = ok(c.post("/api/wechat/subscriptions", json={"errMsg": OK, TEMPLATE: "accept"}))
    assert answer["added"] == 1 and answer["credits"] == 1
    data = mine(api, alice)
    assert data["subscriptions"][TEMPLATE]["lastResult"] == "accept"
    assert data["prompt"] is None and data["hint"] is None


def test_no_credit_left_asks_again(api: Api) -> None:
    alice = api.user("李丽")
    data = mine(api, alice)  # never asked: no row at all
    assert data["credits"] == 0
    assert data["prompt"] == "ask_again"
    assert data["subscriptions"][TEMPLATE] == {
        "credits": 0,
        "lastResult": None,
        "lastResultAt": None,
        "prompt": "ask_again",
        "hint": data["hint"],
    }


def test_each_template_keeps_its_own_answer_and_a_failed_call_keeps_none(api: Api) -> None:
    alice = api.user("李丽")
    c = api.client(alice)
    ok(c.post("/api/wechat/subscriptions", json={"errMsg": OK, TEMPLATE: "accept", "TPL-other": "filter"}))
    # A failed call (e.g. the user closed the dialog) says nothing about any template.
    ok(c.post("/api/wechat/subscriptions", json={"errMsg": "requestSubscribeMessage:fail cancel", TEMPLATE: "ban"}))
    data = mine(api, alice)
    assert data["subscriptions"][TEMPLATE]["lastResult"] == "accept"
    assert data["subscriptions"]["TPL-other"]["lastResult"] == "filter"
    assert data["subscriptions"]["TPL-other"]["prompt"] == "ask_again"
    assert data["templates"] == {TEMPLATE: 1, "TPL-other": 0}
    assert data["prompt"] is None


def test_an_answer_it_does_not_know_is_ignored(api: Api) -> None:
    """WeChat may add answers; one this server does not know neither earns a credit nor replaces the last one."""
    alice = api.user("李丽")
    c = api.client(alice)
    ok(c.post("/api/wechat/subscriptions", json={"errMsg": OK, TEMPLATE: "reject"}))
    answer = ok(c.post("/api/wechat/subscriptions", json={"errMsg": OK, TEMPLATE: "maybe"}))
    assert answer["added"] == 0
    assert mine(api, alice)["subscriptions"][TEMPLATE]["lastResult"] == "reject"


def test_the_openapi_lists_the_answers_and_prompts(api: Api) -> None:
    r = api.client().get("/openapi.json")
    assert r.status_code == 200
    sub = r.json()["components"]["schemas"]["SubscriptionOut"]["properties"]
    assert all(answer in str(sub["lastResult"]) for answer in ("accept", "reject", "ban", "filter"))
    assert all(prompt in str(sub["prompt"]) for prompt in ("enable_in_settings", "ask_again"))
