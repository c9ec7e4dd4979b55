"""The fake WeChat / WeCom server, exercised over real HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from leadpush_fakes.wechat import FakeWeChatState, check_data_value
from leadpush_fakes.wechat.rules import has_non_ascii_u_escape
from support.channels import FakeWeChatServer  # its `fake_wechat` fixture is under test here too

SUBSCRIBE = "/cgi-bin/message/subscribe/send"
WECOM_SEND = "/cgi-bin/message/send"
GETTOKEN = "/cgi-bin/gettoken"
OPENID = "oAbc-mini-program-user"
TPL = "TPL-lead-assigned"


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def client(fake_wechat: FakeWeChatServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake_wechat.url, timeout=5.0) as c:
        yield c


@pytest.fixture(scope="module")
def shared_server() -> Iterator[FakeWeChatServer]:
    with FakeWeChatServer() as server:
        yield server


@pytest.fixture
def shared(shared_server: FakeWeChatServer) -> Iterator[FakeWeChatServer]:
    """One server for many small tests (fully reset before each), to keep the suite fast."""
    shared_server.state.reset(full=True)
    shared_server.state.clear_faults()
    yield shared_server


@pytest.fixture
def strict() -> Iterator[FakeWeChatServer]:
    """A fake with configured credentials, templates, agent and a controllable clock."""
    state = FakeWeChatState(
        appid="wx-app",
        secret="wx-secret",
        corpid="ww-corp",
        corpsecret="ww-secret",
        agentid=1000002,
        templates=[TPL],
        clock=FakeClock(),
    )
    with FakeWeChatServer(state) as server:
        yield server


@pytest.fixture
def sclient(strict: FakeWeChatServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=strict.url, timeout=5.0) as c:
        yield c


def stable_token(c: httpx.Client, force: bool = False, appid: str = "wx-app", secret: str = "wx-secret") -> Any:
    body = {"grant_type": "client_credential", "appid": appid, "secret": secret, "force_refresh": force}
    return c.post("/cgi-bin/stable_token", json=body).json()


def wecom_token(c: httpx.Client) -> str:
    return c.get("/cgi-bin/gettoken", params={"corpid": "ww-corp", "corpsecret": "ww-secret"}).json()["access_token"]


def sub_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "touser": OPENID,
        "template_id": TPL,
        "page": "pages/customer/detail?id=42",
        "miniprogram_state": "formal",
        "lang": "zh_CN",
        "data": {
            "thing1": {"value": "张三"},
            "phone_number2": {"value": "13800138000"},
            "thing3": {"value": "抖音广告"},
            "time4": {"value": "2026-11-24 10:01"},
        },
    }
    body.update(overrides)
    return body


def send_sub(c: httpx.Client, token: str, body: dict[str, Any]) -> Any:
    return c.post(SUBSCRIBE, params={"access_token": token}, json=body).json()


def wecom_send(c: httpx.Client, token: str, body: dict[str, Any]) -> Any:
    raw = json.dumps(body, ensure_ascii=False).encode()
    headers = {"content-type": "application/json"}
    return c.post(WECOM_SEND, params={"access_token": token}, content=raw, headers=headers).json()


def text_msg(touser: str = "zhangsan", content: str = "新线索：张三", agentid: int = 1000002) -> dict[str, Any]:
    return {"touser": touser, "msgtype": "text", "agentid": agentid, "text": {"content": content}}


# ---------------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------------


def test_stable_token_same_while_valid_and_counts_down(strict: FakeWeChatServer, sclient: httpx.Client) -> None:
    first = stable_token(sclient)
    assert first["expires_in"] == 7200 and first["access_token"]
    strict.state.advance(100)
    second = stable_token(sclient)
    assert second["access_token"] == first["access_token"]
    assert second["expires_in"] == 7100
    stats = sclient.get("/_fake/stats").json()
    assert stats["token_requests"]["stable_token"] == 2
    assert stats["tokens_issued"]["stable_token"] == 1


def test_stable_token_rotates_before_expiry_with_overlap(strict: FakeWeChatServer, sclient: httpx.Client) -> None:
    old = stable_token(sclient)["access_token"]
    strict.state.advance(7000)  # inside the last 5 minutes
    new = stable_token(sclient)
    assert new["access_token"] != old and new["expires_in"] == 7200
    strict.state.add_credits(OPENID, TPL, 5)
    assert send_sub(sclient, old, sub_body())["errcode"] == 0  # overlap: the old one still works
    strict.state.advance(250)
    assert send_sub(sclient, old, sub_body())["errcode"] == 42001
    assert send_sub(sclient, new["access_token"], sub_body())["errcode"] == 0


def test_force_refresh_invalidates_old_token_at_once(strict: FakeWeChatServer, sclient: httpx.Client) -> None:
    strict.state.add_credits(OPENID, TPL, 5)
    old = stable_token(sclient)["access_token"]
    new = stable_token(sclient, force=True)["access_token"]
    assert new != old
    assert send_sub(sclient, old, sub_body())["errcode"] == 40001
    assert send_sub(sclient, new, sub_body())["errcode"] == 0
    assert stable_token(sclient)["access_token"] == new


def test_legacy_token_issues_new_each_call_and_previous_stays_valid(
    strict: FakeWeChatServer, sclient: httpx.Client
) -> None:
    params = {"grant_type": "client_credential", "appid": "wx-app", "secret": "wx-secret"}
    a = sclient.get("/cgi-bin/token", params=params).json()
    b = sclient.get("/cgi-bin/token", params=params).json()
    assert a["access_token"] != b["access_token"] and a["expires_in"] == 7200
    strict.state.add_credits(OPENID, TPL, 2)
    assert send_sub(sclient, a["access_token"], sub_body())["errcode"] == 0
    assert send_sub(sclient, b["access_token"], sub_body())["errcode"] == 0
    assert strict.state.stats()["tokens_issued"]["token"] == 2


def test_credentials_are_checked_when_configured(sclient: httpx.Client) -> None:
    assert stable_token(sclient, appid="other")["errcode"] == 40013
    assert stable_token(sclient, secret="wrong")["errcode"] == 40125
    bad = sclient.get("/cgi-bin/token", params={"grant_type": "client_credential", "appid": "x", "secret": "y"})
    assert bad.status_code == 200 and bad.json()["errcode"] == 40013
    r = sclient.get("/cgi-bin/gettoken", params={"corpid": "nope", "corpsecret": "ww-secret"}).json()
    assert r["errcode"] == 40013
    r = sclient.get("/cgi-bin/gettoken", params={"corpid": "ww-corp", "corpsecret": "nope"}).json()
    assert r["errcode"] == 40001
    assert " rid: " in r["errmsg"]


def test_any_credentials_accepted_by_default(client: httpx.Client) -> None:
    assert "access_token" in stable_token(client, appid="anything", secret="goes")


def test_expire_gives_42001_and_a_new_token_is_issued(strict: FakeWeChatServer, sclient: httpx.Client) -> None:
    strict.state.add_credits(OPENID, TPL, 5)
    old = stable_token(sclient)["access_token"]
    assert sclient.post("/_fake/tokens/expire", json={}).json()["changed"] >= 1
    r = send_sub(sclient, old, sub_body())
    assert r["errcode"] == 42001 and r["errmsg"].startswith("access_token expired rid: ")
    new = stable_token(sclient)["access_token"]
    assert new != old
    assert send_sub(sclient, new, sub_body())["errcode"] == 0
    # natural expiry after 7200 s
    strict.state.advance(7200)
    assert send_sub(sclient, new, sub_body())["errcode"] == 42001


def test_revoke_one_token_gives_40001(strict: FakeWeChatServer, sclient: httpx.Client) -> None:
    tok = stable_token(sclient)["access_token"]
    assert sclient.post("/_fake/tokens/revoke", json={"token": tok}).json() == {"changed": 1}
    r = send_sub(sclient, tok, sub_body())
    assert r["errcode"] == 40001
    assert r["errmsg"].startswith("invalid credential, access_token is invalid or not latest rid: ")


def test_missing_and_malformed_tokens(sclient: httpx.Client) -> None:
    assert sclient.post(SUBSCRIBE, json=sub_body()).json()["errcode"] == 40001
    assert send_sub(sclient, "no-such-token", sub_body())["errcode"] == 40001
    assert send_sub(sclient, "", sub_body())["errcode"] == 40014
    assert send_sub(sclient, "has space", sub_body())["errcode"] == 40014


# ---------------------------------------------------------------------------------------------
# Subscribe messages
# ---------------------------------------------------------------------------------------------


def test_validation_order(strict: FakeWeChatServer, sclient: httpx.Client) -> None:
    tok = stable_token(sclient)["access_token"]
    body = sub_body(touser="oOA-official-account", template_id="unknown", page="other/x")
    body["data"]["thing1"] = {"value": ""}
    assert send_sub(sclient, tok, body)["errcode"] == 40003
    body["touser"] = OPENID
    assert send_sub(sclient, tok, body)["errcode"] == 40037
    body["template_id"] = TPL
    assert send_sub(sclient, tok, body)["errcode"] == 41030
    body["page"] = "pages/index/index"
    r = send_sub(sclient, tok, body)
    assert r["errcode"] == 47003 and "data.thing1.value" in r["errmsg"]
    body["data"]["thing1"] = {"value": "张三"}
    assert send_sub(sclient, tok, body)["errcode"] == 43101
    strict.state.add_credits(OPENID, TPL, 1)
    r = send_sub(sclient, tok, body)
    assert r["errcode"] == 0 and r["errmsg"] == "ok"
    stats = strict.state.stats()
    assert stats["rejected_by_kind"]["subscribe"] == {40003: 1, 40037: 1, 41030: 1, 47003: 1, 43101: 1}


def test_openid_rules(fake_wechat: FakeWeChatServer, client: httpx.Client) -> None:
    tok = stable_token(client)["access_token"]
    fake_wechat.state.register_template(TPL, long_term=True)
    assert send_sub(client, tok, sub_body(touser=""))["errcode"] == 40003
    assert send_sub(client, tok, sub_body(touser="oOA123"))["errcode"] == 40003
    assert send_sub(client, tok, sub_body(touser="any-mini-openid"))["errcode"] == 0
    fake_wechat.state.accept_any_openid = False
    assert send_sub(client, tok, sub_body(touser="any-mini-openid"))["errcode"] == 40003
    client.post("/_fake/openids", json={"openids": ["any-mini-openid"]})
    assert send_sub(client, tok, sub_body(touser="any-mini-openid"))["errcode"] == 0


def test_page_is_optional(strict: FakeWeChatServer, sclient: httpx.Client) -> None:
    strict.state.add_credits(OPENID, TPL, 1)
    body = sub_body()
    del body["page"]
    assert send_sub(sclient, stable_token(sclient)["access_token"], body)["errcode"] == 0


BAD_VALUES = [
    ("thing1", "🎉" * 10 + "新线索来自抖音广告投放渠道"[:11]),  # 21 characters with emoji
    ("thing2", ""),
    ("thing3", "   "),
    ("thing4", 42),
    ("thing5", None),
    ("phone_number6", "138-0013-800a"),
    ("phone_number7", "138 0013 8000"),
    ("phone_number8", "1" * 18),
    ("number9", "12a"),
    ("number10", "1" * 33),
    ("letter11", "abc1"),
    ("symbol12", "%%%%%%"),
    ("character_string13", "订单123"),
    ("character_string14", "A" * 33),
    ("time15", "25:00"),
    ("time16", "2026-11-24 10:01:05"),
    ("time17", "2026/11/24 10:01"),
    ("date18", "2026-02-30"),
    ("date19", "tomorrow"),
    ("amount20", "¥12345678901"),
    ("amount21", "12,00元"),
    ("car_number22", "粤B123456789"),
    ("name23", "张三Zhang"),
    ("name24", "张" * 11),
    ("name25", "A" * 21),
    ("phrase26", "已分配ok"),
    ("phrase27", "已经分配给你"),
    ("unknowntype28", "x"),
]


@pytest.mark.parametrize(("key", "value"), BAD_VALUES)
def test_data_value_rules_reject(shared: FakeWeChatServer, key: str, value: Any) -> None:
    shared.state.add_credits(OPENID, TPL, 1)
    body = sub_body()
    body["data"][key] = {"value": value}
    with httpx.Client(base_url=shared.url, timeout=5.0) as client:
        r = send_sub(client, stable_token(client)["access_token"], body)
    assert r["errcode"] == 47003
    assert f"data.{key}.value" in r["errmsg"] and " rid: " in r["errmsg"]
    assert shared.state.get_credits(OPENID, TPL) == 1  # nothing consumed


def test_data_value_missing_value_key(fake_wechat: FakeWeChatServer, client: httpx.Client) -> None:
    body = sub_body()
    body["data"]["thing9"] = {"text": "x"}
    r = send_sub(client, stable_token(client)["access_token"], body)
    assert r["errcode"] == 47003 and "data.thing9.value" in r["errmsg"]


GOOD_VALUES = [
    ("thing", "🎉" * 5 + "新线索来自抖音广告投放渠道"[:15]),  # exactly 20 characters
    ("thing", "New lead from Douyin"),
    ("number", "3.1415"),
    ("letter", "ABCdef"),
    ("symbol", "%#!"),
    ("character_string", "ORD-2026/11#42"),
    ("time", "15:01"),
    ("time", "2019年10月1日 15:01"),
    ("time", "2019-10-01 15:01"),
    ("date", "2019-10-01"),
    ("date", "2019年10月1日"),
    ("date", "2019-10-01 23:59"),
    ("amount", "¥100"),
    ("amount", "￥99.50元"),
    ("amount", "100元"),
    ("phone_number", "+86-0766-66888866"),
    ("phone_number", "(0766)66888866"),
    ("car_number", "粤A8Z8A8"),
    ("name", "欧阳娜娜"),
    ("name", "John Smith"),
    ("phrase", "已分配"),
]


@pytest.mark.parametrize(("kind", "value"), GOOD_VALUES)
def test_data_value_rules_accept(kind: str, value: str) -> None:
    assert check_data_value(kind, value)


def test_credits_are_consumed_then_43101(fake_wechat: FakeWeChatServer, client: httpx.Client) -> None:
    tok = stable_token(client)["access_token"]
    r = client.post("/_fake/credits", json={"openid": OPENID, "templateId": TPL, "count": 2})
    assert r.json()["count"] == 2
    assert send_sub(client, tok, sub_body())["errcode"] == 0
    assert send_sub(client, tok, sub_body())["errcode"] == 0
    r = send_sub(client, tok, sub_body())
    assert r["errcode"] == 43101 and r["errmsg"].startswith("user refuse to accept the msg rid: ")
    got = client.get("/_fake/credits", params={"openid": OPENID, "templateId": TPL}).json()
    assert got == {"openid": OPENID, "templateId": TPL, "count": 0}
    # credits are per (openid, template)
    fake_wechat.state.add_credits(OPENID, "OTHER", 1)
    assert send_sub(client, tok, sub_body())["errcode"] == 43101
    assert send_sub(client, tok, sub_body(template_id="OTHER"))["errcode"] == 0


def test_long_term_templates_never_consume(fake_wechat: FakeWeChatServer, client: httpx.Client) -> None:
    client.post("/_fake/templates", json={"templates": ["LONG"], "longTerm": True})
    tok = stable_token(client)["access_token"]
    for _ in range(3):
        assert send_sub(client, tok, sub_body(template_id="LONG"))["errcode"] == 0
    assert fake_wechat.state.get_credits(OPENID, "LONG") == 0


def test_accepted_messages_are_recorded(fake_wechat: FakeWeChatServer, client: httpx.Client) -> None:
    fake_wechat.state.add_credits(OPENID, TPL, 1)
    before = time.time()
    r = send_sub(client, stable_token(client)["access_token"], sub_body())
    assert isinstance(r["msgid"], int) and 0 < r["msgid"] < 2**63
    listed = client.get("/_fake/messages", params={"kind": "subscribe"}).json()
    assert listed["count"] == 1
    msg = listed["messages"][0]
    assert msg["msgid"] == r["msgid"] and msg["openid"] == OPENID and msg["templateId"] == TPL
    assert msg["body"] == sub_body()
    assert isinstance(msg["receivedAt"], float) and msg["receivedAt"] >= before - 1
    assert client.get("/_fake/messages", params={"kind": "wecom"}).json()["count"] == 0
    assert fake_wechat.state.get_messages()[0]["msgid"] == r["msgid"]


# ---------------------------------------------------------------------------------------------
# Login
# ---------------------------------------------------------------------------------------------


def test_jscode2session_single_use(client: httpx.Client) -> None:
    client.post("/_fake/codes", json={"code": "c1", "openid": "o-1", "unionid": "u-1"})
    client.post("/_fake/codes", json={"code": "c2", "openid": "o-2"})
    params = {"appid": "a", "secret": "s", "js_code": "c1", "grant_type": "authorization_code"}
    r = client.get("/sns/jscode2session", params=params).json()
    assert r["openid"] == "o-1" and r["unionid"] == "u-1" and r["session_key"]
    r = client.get("/sns/jscode2session", params=params).json()
    assert r["errcode"] == 40029 and r["errmsg"].startswith("invalid code rid: ")
    r = client.get("/sns/jscode2session", params={**params, "js_code": "c2"}).json()
    assert r["openid"] == "o-2" and "unionid" not in r
    assert client.get("/sns/jscode2session", params={**params, "js_code": "zz"}).json()["errcode"] == 40029


def test_jscode2session_rate_fault(fake_wechat: FakeWeChatServer, client: httpx.Client) -> None:
    fake_wechat.state.register_code("c1", "o-1")
    client.post("/_fake/faults", json={"path": "/sns/jscode2session", "kind": "errcode", "errcode": 45011, "count": 1})
    params = {"appid": "a", "secret": "s", "js_code": "c1", "grant_type": "authorization_code"}
    assert client.get("/sns/jscode2session", params=params).json()["errcode"] == 45011
    assert client.get("/sns/jscode2session", params=params).json()["openid"] == "o-1"


# ---------------------------------------------------------------------------------------------
# WeCom
# ---------------------------------------------------------------------------------------------


def test_wecom_token_same_while_valid_and_separate_namespace(strict: FakeWeChatServer, sclient: httpx.Client) -> None:
    r = sclient.get("/cgi-bin/gettoken", params={"corpid": "ww-corp", "corpsecret": "ww-secret"}).json()
    assert r["errcode"] == 0 and r["errmsg"] == "ok" and r["expires_in"] == 7200
    assert wecom_token(sclient) == r["access_token"]
    assert strict.state.stats()["tokens_issued"]["gettoken"] == 1
    wx = stable_token(sclient)["access_token"]
    assert wecom_send(sclient, wx, text_msg())["errcode"] == 40001
    assert send_sub(sclient, r["access_token"], sub_body())["errcode"] == 40001
    assert wecom_send(sclient, "", text_msg())["errcode"] == 40014
    strict.state.expire_tokens(r["access_token"])
    assert wecom_send(sclient, r["access_token"], text_msg())["errcode"] == 42001
    assert wecom_token(sclient) != r["access_token"]


def test_wecom_invaliduser_lowercased_and_81013(strict: FakeWeChatServer, sclient: httpx.Client) -> None:
    sclient.post("/_fake/wecom/users", json={"users": ["ZhangSan", "lisi"]})
    tok = wecom_token(sclient)
    r = wecom_send(sclient, tok, text_msg("ZhangSan|WangWu|Ghost"))
    assert r["errcode"] == 0 and r["invaliduser"] == "wangwu|ghost" and r["msgid"]
    msgs = strict.state.get_messages("wecom")
    assert msgs[0]["touser"] == ["zhangsan"] and msgs[0]["body"]["text"]["content"] == "新线索：张三"
    r = wecom_send(sclient, tok, text_msg("WangWu|Ghost"))
    assert r["errcode"] == 81013 and r["errmsg"].startswith("user & party & tag all invalid")
    assert r["invaliduser"] == "wangwu|ghost"


def test_wecom_any_user_when_none_registered(client: httpx.Client) -> None:
    tok = client.get("/cgi-bin/gettoken", params={"corpid": "c", "corpsecret": "s"}).json()["access_token"]
    r = wecom_send(client, tok, text_msg("whoever|Someone"))
    assert r["errcode"] == 0 and r["invaliduser"] == ""


def test_wecom_agentid_and_msgtype(sclient: httpx.Client) -> None:
    tok = wecom_token(sclient)
    assert wecom_send(sclient, tok, text_msg(agentid=1))["errcode"] == 40056
    body = text_msg()
    body["agentid"] = "1000002"
    assert wecom_send(sclient, tok, body)["errcode"] == 40056
    r = wecom_send(sclient, tok, {**text_msg(), "msgtype": "voice"})
    assert r["errcode"] == 40008 and r["errmsg"].startswith("invalid message type")


def test_wecom_content_limits(sclient: httpx.Client) -> None:
    tok = wecom_token(sclient)
    assert wecom_send(sclient, tok, text_msg(content=""))["errcode"] == 44004
    assert wecom_send(sclient, tok, text_msg(content="中" * 683))["errcode"] == 45002  # 2049 bytes
    assert wecom_send(sclient, tok, text_msg(content="中" * 682))["errcode"] == 0  # 2046 bytes

    def card(**kw: Any) -> dict[str, Any]:
        tc = {
            "title": "新线索",
            "description": "张三 13800138000",
            "url": "https://crm.example/l/1",
            "btntxt": "详情",
        }
        tc.update(kw)
        return {"touser": "u1", "msgtype": "textcard", "agentid": 1000002, "textcard": tc}

    assert wecom_send(sclient, tok, card())["errcode"] == 0
    assert wecom_send(sclient, tok, card(title="标" * 43))["errcode"] == 45002  # 129 bytes
    assert wecom_send(sclient, tok, card(description="x" * 513))["errcode"] == 45002
    assert wecom_send(sclient, tok, card(btntxt="查看详情页"))["errcode"] == 45002
    assert wecom_send(sclient, tok, card(url=""))["errcode"] == 44004


def test_wecom_rejects_unicode_escapes(sclient: httpx.Client) -> None:
    tok = wecom_token(sclient)
    escaped = json.dumps(text_msg(content="新线索")).encode()  # ensure_ascii=True -> \u65b0...
    assert b"\\u" in escaped
    r = sclient.post(WECOM_SEND, params={"access_token": tok}, content=escaped).json()
    assert r["errcode"] == 40033 and r["errmsg"].startswith("invalid charset")
    ascii_escape = b'{"touser":"u1","msgtype":"text","agentid":1000002,"text":{"content":"\\u0041 ok"}}'
    assert sclient.post(WECOM_SEND, params={"access_token": tok}, content=ascii_escape).json()["errcode"] == 0
    assert wecom_send(sclient, tok, text_msg(content="literal \\u4e2d stays"))["errcode"] == 0
    assert has_non_ascii_u_escape(b'"\\\\\\u4e2d"') and not has_non_ascii_u_escape(b'"\\\\u4e2d"')


def test_wecom_silent_drop_past_30_per_minute(strict: FakeWeChatServer, sclient: httpx.Client) -> None:
    tok = wecom_token(sclient)
    for _ in range(30):
        assert wecom_send(sclient, tok, text_msg("u1"))["errcode"] == 0
    r = wecom_send(sclient, tok, text_msg("u1|u2"))
    assert r["errcode"] == 0 and r["invaliduser"] == ""  # silently dropped for u1 only
    stats = sclient.get("/_fake/stats").json()
    assert stats["wecom_dropped"] == {"u1": 1}
    assert strict.state.get_messages("wecom")[-1]["touser"] == ["u2"]
    assert wecom_send(sclient, tok, text_msg("u1"))["errcode"] == 0
    assert strict.state.wecom_dropped["u1"] == 2
    sclient.post("/_fake/clock/advance", json={"seconds": 61})
    wecom_send(sclient, tok, text_msg("u1"))
    assert strict.state.wecom_dropped["u1"] == 2
    assert len([m for m in strict.state.get_messages("wecom") if "u1" in m["touser"]]) == 31


def test_wecom_hourly_limit(strict: FakeWeChatServer) -> None:
    st = strict.state
    for i in range(1000):
        if i and i % 30 == 0:
            st.advance(61)  # stay under 30 a minute; 34 minutes in total
        _, delivered, _ = st.deliver_wecom(1000002, ["u1"], [], {"msgtype": "text"})
        assert delivered == ["u1"], i
    _, delivered, dropped = st.deliver_wecom(1000002, ["u1"], [], {"msgtype": "text"})
    assert delivered == [] and dropped == ["u1"]


# ---------------------------------------------------------------------------------------------
# Faults, stats, reset
# ---------------------------------------------------------------------------------------------


def test_fault_errcode_for_next_n(fake_wechat: FakeWeChatServer, client: httpx.Client) -> None:
    fake_wechat.state.add_credits(OPENID, TPL, 5)
    tok = stable_token(client)["access_token"]
    r = client.post("/_fake/faults", json={"path": SUBSCRIBE, "kind": "errcode", "errcode": -1, "count": 2})
    assert r.status_code == 200
    for _ in range(2):
        resp = client.post(SUBSCRIBE, params={"access_token": tok}, json=sub_body())
        assert resp.status_code == 200
        assert resp.json()["errcode"] == -1 and resp.json()["errmsg"].startswith("system error rid: ")
    assert send_sub(client, tok, sub_body())["errcode"] == 0
    assert fake_wechat.state.get_credits(OPENID, TPL) == 4  # faulted calls consume nothing
    assert client.get("/_fake/stats").json()["faults_fired"] == {"errcode": 2}


def test_fault_http_status_and_clear(client: httpx.Client) -> None:
    client.post("/_fake/faults", json={"path": "*", "kind": "http", "status": 502})
    assert client.post("/cgi-bin/stable_token", json={}).status_code == 502
    assert client.get("/cgi-bin/gettoken", params={"corpid": "c", "corpsecret": "s"}).status_code == 502
    assert client.get("/_fake/stats").status_code == 200  # control endpoints are never faulted
    assert client.delete("/_fake/faults").status_code == 200
    assert "access_token" in stable_token(client)


def test_fault_rate_with_seed_is_reproducible(fake_wechat: FakeWeChatServer, client: httpx.Client) -> None:
    def run_once() -> list[int]:
        client.delete("/_fake/faults")
        client.post(
            "/_fake/faults", json={"path": GETTOKEN, "kind": "errcode", "errcode": 45009, "rate": 0.3, "seed": 7}
        )
        out = []
        for _ in range(15):
            out.append(client.get(GETTOKEN, params={"corpid": "c", "corpsecret": f"s{len(out)}"}).json()["errcode"])
        return out

    first = run_once()
    assert run_once() == first
    assert 0 < first.count(45009) < 15


@pytest.mark.slow  # several processes / many concurrent sends / a slow fault
def test_fault_slow_does_not_block_others(client: httpx.Client, fake_wechat: FakeWeChatServer) -> None:
    client.post("/_fake/faults", json={"path": GETTOKEN, "kind": "slow", "delay": 0.6, "count": 1})

    async def scenario() -> tuple[float, float, int]:
        async with httpx.AsyncClient(base_url=fake_wechat.url, timeout=5.0) as ac:

            async def slow() -> tuple[float, int]:
                t0 = time.perf_counter()
                r = await ac.get(GETTOKEN, params={"corpid": "c", "corpsecret": "s"})
                return time.perf_counter() - t0, r.json()["errcode"]

            async def fast() -> float:
                await asyncio.sleep(0.05)
                t0 = time.perf_counter()
                await ac.post(
                    "/cgi-bin/stable_token",
                    json={"grant_type": "client_credential", "appid": "a", "secret": "b"},
                )
                return time.perf_counter() - t0

            (slow_t, code), fast_t = await asyncio.gather(slow(), fast())
            return slow_t, fast_t, code

    slow_t, fast_t, code = asyncio.run(scenario())
    assert slow_t >= 0.55 and code == 0  # slow, but answered normally
    assert fast_t < 0.3


@pytest.mark.slow  # waits out a slow answer
def test_a_client_that_gives_up_costs_one_log_line_and_no_message(
    fake_wechat: FakeWeChatServer, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A sender that times out during a 'slow' fault is gone when the fake reads its request: the fake
    records nothing and says so in one line, not a traceback (a fault run does this thousands of times)."""
    caplog.set_level(logging.INFO)
    uvicorn_error = logging.getLogger("uvicorn.error")  # uvicorn's loggers do not propagate
    uvicorn_error.addHandler(caplog.handler)
    try:
        fake_wechat.state.add_fault(SUBSCRIBE, "slow", delay=0.8, count=1)
        fake_wechat.state.add_credits(OPENID, TPL, 1)
        tok = stable_token(client)["access_token"]
        with pytest.raises(httpx.TimeoutException):
            client.post(SUBSCRIBE, params={"access_token": tok}, json=sub_body(), timeout=0.2)
        deadline = time.monotonic() + 30
        while not any("went away" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        uvicorn_error.removeHandler(caplog.handler)
    gone = [r for r in caplog.records if "went away" in r.getMessage()]
    assert len(gone) == 1 and SUBSCRIBE in gone[0].getMessage(), [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    assert fake_wechat.state.get_messages("subscribe") == []
    assert send_sub(client, tok, sub_body())["errcode"] == 0  # the credit is still there


def test_fault_drop_closes_connection(fake_wechat: FakeWeChatServer, client: httpx.Client) -> None:
    fake_wechat.state.add_fault(SUBSCRIBE, "drop", count=1)
    fake_wechat.state.add_credits(OPENID, TPL, 1)
    tok = stable_token(client)["access_token"]
    with pytest.raises(httpx.TransportError):
        client.post(SUBSCRIBE, params={"access_token": tok}, json=sub_body())
    assert send_sub(client, tok, sub_body())["errcode"] == 0


def test_fault_validation(client: httpx.Client) -> None:
    assert client.post("/_fake/faults", json={"kind": "explode"}).status_code == 400
    assert client.post("/_fake/faults", json={"kind": "errcode", "rate": 2}).status_code == 400


def test_reset(fake_wechat: FakeWeChatServer, client: httpx.Client) -> None:
    fake_wechat.state.accept_any_openid = False
    fake_wechat.state.register_openid(OPENID)
    fake_wechat.state.add_credits(OPENID, TPL, 3)
    tok = stable_token(client)["access_token"]
    assert send_sub(client, tok, sub_body())["errcode"] == 0
    client.post("/_fake/faults", json={"path": GETTOKEN, "kind": "http"})
    assert client.post("/_fake/reset").json() == {"ok": True}
    assert send_sub(client, tok, sub_body())["errcode"] == 40001  # tokens forgotten
    assert fake_wechat.state.get_credits(OPENID, TPL) == 0
    assert client.get("/_fake/messages").json()["count"] == 0
    stats = client.get("/_fake/stats").json()
    assert stats["accepted"] == {} and stats["rejected"] == {"40001": 1}
    assert client.get(GETTOKEN, params={"corpid": "c", "corpsecret": "s"}).json()["errcode"] == 0  # fault gone
    assert fake_wechat.state.accept_any_openid is False  # configuration survives a plain reset
    client.post("/_fake/reset", json={"full": True})
    assert fake_wechat.state.accept_any_openid is True and not fake_wechat.state.known_openids


def test_errors_are_http_200_json(client: httpx.Client) -> None:
    r = client.post(SUBSCRIBE, params={"access_token": "nope"}, content=b"not json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json()["errcode"] == 40001
    tok = stable_token(client)["access_token"]
    r = client.post(SUBSCRIBE, params={"access_token": tok}, content=b"not json")
    assert r.status_code == 200 and r.json()["errcode"] == 47001


def test_each_app_has_its_own_state() -> None:
    from leadpush_fakes.wechat import create_app

    a, b = create_app(), create_app()
    assert a.state.fake is not b.state.fake
