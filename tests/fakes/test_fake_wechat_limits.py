"""The fake WeChat's limits, over real HTTP: the legacy token's grace, force_refresh limits, quotas.

What the platform documents (see leadpush_fakes/wechat/rules.py for the sources): a legacy token keeps
working about 5 minutes after a newer one is issued, then it is "not latest" (40001); force_refresh at
most 20 a day and 30 s apart (45009 / 45011 beyond); daily quotas (45009) that reset at Beijing midnight.
Every limit is configurable through ``POST /_fake/config``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from leadpush_fakes.wechat import FakeWeChatState
from support.channels import FakeWeChatServer

SUBSCRIBE = "/cgi-bin/message/subscribe/send"
OPENID = "oAbc-mini-program-user"
TPL = "TPL-lead-assigned"
APP = {"grant_type": "client_credential", "appid": "wx-app", "secret": "wx-secret"}


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:  # 2027-01-15 16:00 in Beijing
        self.t = start

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def server() -> Iterator[FakeWeChatServer]:
    state = FakeWeChatState(appid="wx-app", secret="wx-secret", templates=[TPL], clock=FakeClock())
    with FakeWeChatServer(state) as srv:
        yield srv


@pytest.fixture
def fake(server: FakeWeChatServer) -> Iterator[FakeWeChatServer]:
    server.state.reset(full=True)
    server.state.clear_faults()
    yield server


@pytest.fixture
def c(fake: FakeWeChatServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, timeout=5.0) as client:
        yield client


def legacy(c: httpx.Client) -> Any:
    return c.get("/cgi-bin/token", params=APP).json()


def stable(c: httpx.Client, force: bool = False) -> Any:
    return c.post("/cgi-bin/stable_token", json={**APP, "force_refresh": force}).json()


def body() -> dict[str, Any]:
    return {
        "touser": OPENID,
        "template_id": TPL,
        "page": "pages/customer/detail?id=42",
        "data": {"thing1": {"value": "张三"}, "time4": {"value": "2026-11-24 10:01"}},
    }


def send(c: httpx.Client, token: str) -> int:
    return int(c.post(SUBSCRIBE, params={"access_token": token}, json=body()).json()["errcode"])


def advance(c: httpx.Client, seconds: float) -> None:
    assert c.post("/_fake/clock/advance", json={"seconds": seconds}).status_code == 200


def to_next_platform_day(c: httpx.Client, fake: FakeWeChatServer) -> None:
    """Move the fake's clock just past the next midnight in Beijing (where WeChat's days roll over)."""
    now = fake.state.now()
    advance(c, 86400 - (now + 8 * 3600) % 86400 + 1)


def configure(c: httpx.Client, **values: Any) -> Any:
    r = c.post("/_fake/config", json=values)
    assert r.status_code == 200, r.text
    return r.json()


# ---- the legacy token ------------------------------------------------------------------


def test_a_legacy_token_keeps_working_five_minutes_after_a_newer_one_then_40001(
    fake: FakeWeChatServer, c: httpx.Client
) -> None:
    fake.state.add_credits(OPENID, TPL, 10)
    old = legacy(c)["access_token"]
    advance(c, 3600)  # long-lived while it is the latest
    assert send(c, old) == 0
    new = legacy(c)["access_token"]
    advance(c, 299)
    assert send(c, old) == 0 and send(c, new) == 0  # both within the grace
    advance(c, 2)
    r = c.post(SUBSCRIBE, params={"access_token": old}, json=body()).json()
    assert r["errcode"] == 40001 and r["errmsg"].startswith("invalid credential, access_token is invalid or not latest")
    assert send(c, new) == 0
    states = {t["token"]: t["status"] for t in c.get("/_fake/tokens").json()["tokens"]}
    assert states == {old: "revoked", new: "valid"}


def test_the_legacy_grace_is_configurable_and_can_be_turned_off(fake: FakeWeChatServer, c: httpx.Client) -> None:
    fake.state.add_credits(OPENID, TPL, 10)
    assert configure(c, legacy_token_grace=60)["legacy_token_grace"] == 60.0
    old = legacy(c)["access_token"]
    legacy(c)
    advance(c, 61)
    assert send(c, old) == 40001
    configure(c, legacy_token_grace=None)  # as before issue 16: earlier tokens live until they expire
    old = legacy(c)["access_token"]
    legacy(c)
    advance(c, 3600)
    assert send(c, old) == 0


def test_legacy_token_calls_are_limited_per_day(fake: FakeWeChatServer, c: httpx.Client) -> None:
    configure(c, legacy_token_daily_limit=3)
    assert all("access_token" in legacy(c) for _ in range(3))
    r = legacy(c)
    assert r["errcode"] == 45009 and r["errmsg"].startswith("reach max api daily quota limit")
    assert c.get("/_fake/quotas").json()["today"]["token"] == 3
    to_next_platform_day(c, fake)
    assert "access_token" in legacy(c)
    assert c.post("/_fake/quotas/clear").json()["today"] == {}  # as the platform's clear_quota


# ---- force_refresh -----------------------------------------------------------------------


def test_force_refresh_at_least_30_seconds_apart(fake: FakeWeChatServer, c: httpx.Client) -> None:
    fake.state.add_credits(OPENID, TPL, 10)
    first = stable(c, force=True)["access_token"]
    advance(c, 29)
    r = stable(c, force=True)
    assert r["errcode"] == 45011 and r["errmsg"].startswith("api minute-quota reach limit")
    assert send(c, first) == 0  # a refused force_refresh invalidates nothing
    assert stable(c)["access_token"] == first  # a normal call is not limited by it
    advance(c, 1)
    second = stable(c, force=True)["access_token"]
    assert second != first and send(c, first) == 40001 and send(c, second) == 0
    assert c.get("/_fake/quotas").json()["forceRefreshes"] == 2


def test_force_refresh_at_most_20_a_day_then_45009_until_the_day_rolls_over(
    fake: FakeWeChatServer, c: httpx.Client
) -> None:
    for _ in range(20):
        assert "access_token" in stable(c, force=True)
        advance(c, 30)
    refused = stable(c, force=True)
    assert refused["errcode"] == 45009
    assert "access_token" in stable(c)  # normal calls still work
    assert c.get("/_fake/quotas").json()["today"]["force_refresh"] == 20
    to_next_platform_day(c, fake)
    assert "access_token" in stable(c, force=True)
    stats = c.get("/_fake/stats").json()
    assert stats["rejected_by_kind"]["token"] == {"45009": 1}


def test_force_refresh_limits_are_configurable(c: httpx.Client) -> None:
    configure(c, force_refresh_interval=0, force_refresh_daily_limit=2)
    assert "access_token" in stable(c, force=True) and "access_token" in stable(c, force=True)
    assert stable(c, force=True)["errcode"] == 45009
    configure(c, force_refresh_interval=None, force_refresh_daily_limit=None)
    assert all("access_token" in stable(c, force=True) for _ in range(30))


def test_stable_token_calls_are_limited_per_minute(fake: FakeWeChatServer, c: httpx.Client) -> None:
    configure(c, stable_token_per_minute=2)
    now = fake.state.now()
    advance(c, 60 - now % 60 + 0.5)  # start of a clock minute
    assert "access_token" in stable(c) and "access_token" in stable(c)
    assert stable(c)["errcode"] == 45011
    advance(c, 60)
    assert "access_token" in stable(c)


# ---- quotas ------------------------------------------------------------------------------


def test_a_daily_send_quota_answers_45009_until_the_day_rolls_over(fake: FakeWeChatServer, c: httpx.Client) -> None:
    fake.state.add_credits(OPENID, TPL, 5)
    configure(c, subscribe_daily_quota=2)
    token = stable(c)["access_token"]
    assert [send(c, token) for _ in range(3)] == [0, 0, 45009]
    assert fake.state.get_credits(OPENID, TPL) == 3  # the refused send spent no credit
    assert len(fake.state.get_messages("subscribe")) == 2
    to_next_platform_day(c, fake)
    token = stable(c)["access_token"]
    assert send(c, token) == 0


def test_the_day_is_beijings(fake: FakeWeChatServer, c: httpx.Client) -> None:
    """Beijing midnight is 16:00 UTC: a quota used up at 15:59 UTC is back at 16:00 UTC."""
    fake.state.add_credits(OPENID, TPL, 5)
    configure(c, subscribe_daily_quota=1)
    now = fake.state.now()
    advance(c, (16 * 3600 - now % 86400) % 86400 - 60)  # 15:59 UTC
    token = stable(c)["access_token"]
    assert [send(c, token), send(c, token)] == [0, 45009]
    advance(c, 61)
    assert send(c, token) == 0


def test_jscode2session_per_minute(fake: FakeWeChatServer, c: httpx.Client) -> None:
    configure(c, jscode2session_per_minute=1)
    now = fake.state.now()
    advance(c, 60 - now % 60 + 0.5)
    for code in ("c1", "c2", "c3"):
        fake.state.register_code(code, OPENID)
    q = {"appid": "wx-app", "secret": "wx-secret", "grant_type": "authorization_code"}
    assert c.get("/sns/jscode2session", params={**q, "js_code": "c1"}).json()["openid"] == OPENID
    assert c.get("/sns/jscode2session", params={**q, "js_code": "c2"}).json()["errcode"] == 45011
    advance(c, 60)
    assert c.get("/sns/jscode2session", params={**q, "js_code": "c2"}).json()["openid"] == OPENID


def test_wecom_member_pacing_is_configurable(fake: FakeWeChatServer, c: httpx.Client) -> None:
    configure(c, wecom_per_minute=2)
    token = c.get("/cgi-bin/gettoken", params={"corpid": "ww", "corpsecret": "s"}).json()["access_token"]
    msg = {"touser": "zhangsan", "msgtype": "text", "agentid": 1, "text": {"content": "新线索"}}
    answers = [c.post("/cgi-bin/message/send", params={"access_token": token}, json=msg).json() for _ in range(3)]
    assert [a["errcode"] for a in answers] == [0, 0, 0]  # the third is dropped silently
    assert fake.state.stats()["wecom_dropped"] == {"zhangsan": 1}


# ---- defaults and control ----------------------------------------------------------------


def test_defaults_are_the_platforms_and_a_full_reset_restores_them(fake: FakeWeChatServer, c: httpx.Client) -> None:
    config = configure(c)
    assert {k: config[k] for k in ("legacy_token_grace", "force_refresh_daily_limit", "force_refresh_interval")} == {
        "legacy_token_grace": 300,
        "force_refresh_daily_limit": 20,
        "force_refresh_interval": 30,
    }
    assert config["subscribe_daily_quota"] is None  # off unless a test sets it
    assert config["legacy_token_daily_limit"] == 2000 and config["stable_token_per_minute"] == 10_000
    configure(c, subscribe_daily_quota=1, legacy_token_grace=5)
    c.post("/_fake/reset", json={"full": True})
    config = configure(c)
    assert config["subscribe_daily_quota"] is None and config["legacy_token_grace"] == 300


def test_bad_limits_are_refused(c: httpx.Client) -> None:
    assert c.post("/_fake/config", json={"force_refresh_interval": -1}).status_code == 400
    assert c.post("/_fake/config", json={"subscribe_daily_quota": "many"}).status_code == 400
    assert c.post("/_fake/config", json={"no_such_limit": 1}).status_code == 400
