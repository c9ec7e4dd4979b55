"""WeCom sign-in (企业微信登录) over real HTTP against the fake WeCom, on both databases.

Each test is a person's browser (an httpx client with its own cookie jar) walking the flow: leadpush's start
sends it to WeCom, WeCom sends it back to the callback with a code and the state, and the callback answers
the sign-in page: with a new session for the bound user, or with what went wrong.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select
from support import CJK, Api, ok
from support.channels import AGENTID, CORPID, FakeWeChatServer

from leadpush.users.models import ApiToken

WXWORK_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148 wxwork/4.1.22 MicroMessenger/7.0.1 Language/zh ColorScheme/Light"
)
DESKTOP_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36"
)
CALLBACK = "/console/auth/wecom/callback"


@dataclass
class Answer:
    """What the callback's page said."""

    response: httpx.Response

    @property
    def status(self) -> int:
        return self.response.status_code

    def meta(self, name: str) -> str | None:
        found = re.search(rf'<meta name="{name}" content="([^"]*)">', self.response.text)
        return unescape(found.group(1)) if found else None

    @property
    def token(self) -> str | None:
        return self.meta("leadpush-session")

    @property
    def error(self) -> tuple[str, str] | None:
        found = re.search(r'id="wecom-error"[^>]*data-code="([^"]+)">([^<]*)<', self.response.text)
        return (found.group(1), unescape(found.group(2))) if found else None


class Person:
    """One browser: its own cookies; follows WeCom's redirects by hand so each step can be looked at."""

    def __init__(self, api: Api, fake: FakeWeChatServer, user_agent: str = WXWORK_UA) -> None:
        self.api = api
        self.fake = fake
        self.browser = api.client()
        self.browser.headers["User-Agent"] = user_agent

    def start(self, next_path: str | None = None, **headers: str) -> httpx.Response:
        params = {"next": next_path} if next_path is not None else {}
        r = self.browser.get("/console/auth/wecom", params=params, headers=headers)
        assert r.status_code == 302, r.text
        return r

    def at_wecom(self, start: httpx.Response) -> str:
        """WeCom's side: the OAuth link redirects at once; the QR page's 确认登录 stands for the phone."""
        link = start.headers["location"].split("#", 1)[0]
        with httpx.Client(timeout=10) as wecom:
            r = wecom.get(link)
            if "/wwlogin/sso/login" in link:
                assert r.status_code == 200 and "确认登录" in r.text, r.text
                confirm = re.search(r'id="confirm" href="([^"]+)"', r.text)
                assert confirm is not None
                r = wecom.get(self.fake.url + unescape(confirm.group(1)))
        assert r.status_code == 302, r.text
        callback = r.headers["location"]
        assert callback.startswith(self.api.url + CALLBACK), callback
        return callback

    def back(self, callback: str) -> Answer:
        return Answer(self.browser.get(callback))

    def sign_in(self, next_path: str | None = None) -> Answer:
        return self.back(self.at_wecom(self.start(next_path)))


@pytest.fixture
def wecom(pushing: Api, fake: FakeWeChatServer) -> Iterator[Api]:
    """leadpush and the fake, emptied; the person at WeCom is alice unless a test says otherwise."""
    fake.state.set_wecom_login(userid="alice")
    yield pushing


@pytest.fixture
def team(wecom: Api):
    """Overrides the shared `team`: people on the leadpush that talks to the fake."""

    class Team:
        admin = wecom.user("管理员", "admin", None)
        alice = wecom.user("李丽", "sales", "A", wecom_userid="alice")
        bob = wecom.user("赵强", "sales", "A")

    return Team


def signed_in_as(api: Api, answer: Answer) -> str:
    assert answer.status == 200 and answer.error is None, answer.response.text
    assert answer.token and answer.token.startswith("lps_")
    return ok(api.client(answer.token).get("/api/me"))["name"]


def refused_page(answer: Answer, status: int, code: str) -> str:
    assert answer.status == status, answer.response.text
    assert answer.token is None
    assert answer.error is not None and answer.error[0] == code, answer.response.text
    message = answer.error[1]
    assert CJK.search(message), message
    return message


def test_inside_wecom_a_member_is_signed_in_silently_and_lands_where_they_were_going(wecom: Api, team, fake) -> None:
    alice = Person(wecom, fake, WXWORK_UA)
    start = alice.start("/console/inbox")
    link = urlsplit(start.headers["location"])
    assert f"{link.scheme}://{link.netloc}{link.path}" == fake.url + "/connect/oauth2/authorize"
    assert link.fragment == "wechat_redirect"
    query = parse_qs(link.query)
    assert query["appid"] == [CORPID] and query["agentid"] == [str(AGENTID)]
    assert query["scope"] == ["snsapi_base"] and query["response_type"] == ["code"]
    assert query["redirect_uri"] == [wecom.url + CALLBACK]
    cookie = start.headers["set-cookie"]
    assert "leadpush_wecom_state=" + query["state"][0] in cookie
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/console/auth/wecom" in cookie
    assert "Secure" not in cookie  # plain http here; see the https test

    answer = alice.back(alice.at_wecom(start))
    assert signed_in_as(wecom, answer) == "李丽"
    assert answer.meta("leadpush-next") == "/console/inbox"
    with wecom.ctx.db.read() as session:  # the same kind of session a password gives, signed in via WeCom
        row = session.scalars(select(ApiToken).where(ApiToken.user_id == team.alice.id, ApiToken.kind == "session"))
        assert [(t.via, t.client) for t in row] == [("wecom", "127.0.0.1")]
    headers = answer.response.headers
    assert headers["cache-control"] == "no-store" and "script-src 'self'" in headers["content-security-policy"]
    assert 'leadpush_wecom_state=""' in headers["set-cookie"]  # the state is spent: its cookie goes


def test_on_a_desktop_the_qr_login_page_signs_in_after_confirming_on_the_phone(wecom: Api, team, fake) -> None:
    alice = Person(wecom, fake, DESKTOP_UA)
    start = alice.start()
    link = urlsplit(start.headers["location"])
    assert f"{link.scheme}://{link.netloc}{link.path}" == fake.url + "/wwlogin/sso/login"
    query = parse_qs(link.query)
    assert query["login_type"] == ["CorpApp"] and query["appid"] == [CORPID] and query["agentid"] == [str(AGENTID)]
    answer = alice.back(alice.at_wecom(start))
    assert signed_in_as(wecom, answer) == "李丽"
    assert answer.meta("leadpush-next") == "/console"


def test_a_callback_for_a_sign_in_another_browser_started_is_refused(wecom: Api, team, fake) -> None:
    victim, attacker = Person(wecom, fake), Person(wecom, fake)
    victim_start = victim.start()
    planted = attacker.at_wecom(attacker.start())  # the attacker's own code and state, sent to the victim
    message = refused_page(victim.back(planted), 400, "state_mismatch")
    assert "不是从本浏览器发起" in message
    # The victim's own sign-in, under way, still works.
    assert signed_in_as(wecom, victim.back(victim.at_wecom(victim_start))) == "李丽"
    # A browser that started nothing has no state cookie at all.
    stranger = Person(wecom, fake)
    refused_page(stranger.back(attacker.at_wecom(attacker.start())), 400, "state_missing")


def test_a_code_works_once_and_a_finished_sign_in_cannot_be_replayed(wecom: Api, team, fake) -> None:
    alice = Person(wecom, fake)
    callback = alice.at_wecom(alice.start())
    assert signed_in_as(wecom, alice.back(callback)) == "李丽"
    # The very same address again: its state is spent (and its cookie gone).
    refused_page(alice.back(callback), 400, "state_missing")
    # The spent code with a fresh state of this browser: WeCom says 40029.
    fresh = parse_qs(urlsplit(alice.at_wecom(alice.start())).query)["state"][0]
    old_code = parse_qs(urlsplit(callback).query)["code"][0]
    message = refused_page(alice.back(f"{wecom.url}{CALLBACK}?code={old_code}&state={fresh}"), 400, "invalid_code")
    assert "无效、已使用或已过期" in message


def test_a_sign_in_left_too_long_expires(wecom: Api, team, fake) -> None:
    alice = Person(wecom, fake)
    callback = alice.at_wecom(alice.start())
    wecom.ctx.clock.advance(seconds=601)  # LEADPUSH_WECOM_LOGIN_STATE_SECONDS = 600
    refused_page(alice.back(callback), 400, "state_expired")
    # A code WeCom issued more than 5 minutes ago is refused by WeCom.
    callback = alice.at_wecom(alice.start())
    fake.state.advance(301)
    refused_page(alice.back(callback), 400, "invalid_code")


def test_a_member_not_bound_to_anyone_is_told_to_ask_an_admin(wecom: Api, team, fake) -> None:
    fake.state.set_wecom_login(userid="zhangwei")
    alice = Person(wecom, fake)
    message = refused_page(alice.sign_in(), 403, "wecom_not_bound")
    assert "zhangwei" in message and "请管理员在用户管理中绑定企业微信账号" in message
    # Someone outside the corp (WeCom answers an openid, no userid).
    fake.state.set_wecom_login(openid="o-outsider")
    refused_page(alice.sign_in(), 403, "not_wecom_member")
    # WeCom userids are case-insensitive.
    fake.state.set_wecom_login(userid="ALICE")
    assert signed_in_as(wecom, alice.sign_in()) == "李丽"


def test_a_deactivated_user_cannot_sign_in_with_wecom(wecom: Api, team, fake) -> None:
    ok(wecom.client(team.admin).patch(f"/api/users/{team.alice.id}", json={"active": False}))
    message = refused_page(Person(wecom, fake).sign_in(), 403, "user_inactive")
    assert "停用" in message


def test_an_access_token_that_expires_mid_flow_is_fetched_again_once(wecom: Api, team, fake) -> None:
    alice = Person(wecom, fake)
    assert signed_in_as(wecom, alice.sign_in()) == "李丽"  # the app's token is cached now
    assert fake.state.stats()["token_requests"] == {"gettoken": 1}
    callback = alice.at_wecom(alice.start())
    fake.state.expire_tokens()  # between WeCom issuing the code and leadpush redeeming it
    assert signed_in_as(wecom, alice.back(callback)) == "李丽"
    stats = fake.state.stats()
    assert stats["rejected_by_kind"]["getuserinfo"] == {42001: 1}
    assert stats["token_requests"] == {"gettoken": 2}


def test_when_wecom_cannot_be_reached_the_page_says_so(wecom: Api, team, fake) -> None:
    alice = Person(wecom, fake)
    for fault in ({"kind": "http", "status": 502}, {"kind": "drop"}, {"kind": "errcode", "errcode": -1}):
        callback = alice.at_wecom(alice.start())
        fake.state.add_fault("/cgi-bin/auth/getuserinfo", count=1, **fault)  # type: ignore[arg-type]
        message = refused_page(alice.back(callback), 502, "wecom_unavailable")
        assert "稍后重试" in message
    # A token WeCom keeps refusing is a configuration problem, said as such.
    fake.state.configure(corpsecret="rotated-by-an-admin")
    try:
        fake.state.expire_tokens()  # so leadpush has to fetch a new one
        refused_page(alice.sign_in(), 502, "wecom_misconfigured")
    finally:
        fake.state.reset(full=True)


def test_an_untrusted_redirect_domain_is_explained(wecom: Api, team, fake) -> None:
    fake.state.configure(wecom_trusted_domains=["crm.example.com"])
    message = refused_page(Person(wecom, fake).sign_in(), 502, "redirect_not_trusted")
    assert "可信域名" in message


def test_declining_at_wecom_sends_no_code(wecom: Api, team, fake) -> None:
    alice = Person(wecom, fake)
    state = parse_qs(urlsplit(alice.start().headers["location"]).query)["state"][0]
    refused_page(alice.back(f"{wecom.url}{CALLBACK}?state={state}"), 400, "wecom_denied")


@pytest.mark.parametrize("target", ["https://evil.example.com/", "//evil.example.com", "/api/me", "/console/login"])
def test_next_only_ever_leads_into_the_console(wecom: Api, team, fake, target: str) -> None:
    answer = Person(wecom, fake).sign_in(target)
    signed_in_as(wecom, answer)
    assert answer.meta("leadpush-next") == "/console"


def test_behind_an_https_proxy_the_cookie_is_secure_and_the_redirect_uses_https(wecom: Api, team, fake) -> None:
    alice = Person(wecom, fake)
    # The test client is 127.0.0.1, the default trusted proxy.
    start = alice.start(**{"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"})
    assert "Secure" in start.headers["set-cookie"]
    redirect = parse_qs(urlsplit(start.headers["location"]).query)["redirect_uri"][0]
    assert redirect == wecom.url.replace("http://", "https://") + CALLBACK
    # LEADPUSH_WECOM_REDIRECT_BASE names the public address outright.
    ctx = wecom.ctx
    settings = ctx.settings
    ctx.settings = settings.model_copy(update={"wecom_redirect_base": "https://crm.example.com"})
    try:
        redirect = parse_qs(urlsplit(alice.start().headers["location"]).query)["redirect_uri"][0]
        assert redirect == "https://crm.example.com" + CALLBACK
    finally:
        ctx.settings = settings


def test_login_options_say_whether_wecom_is_offered(wecom: Api) -> None:
    assert ok(httpx.get(wecom.url + "/console/api/login-options")) == {"password": True, "wecom": True}
    # Without a WeCom app: no button, and the start says so instead of sending anyone to WeCom.
    ctx = wecom.ctx
    settings = ctx.settings
    ctx.settings = settings.model_copy(update={"wecom_agentid": None})
    try:
        assert ok(httpx.get(wecom.url + "/console/api/login-options")) == {"password": True, "wecom": False}
        refused_page(Answer(httpx.get(wecom.url + "/console/auth/wecom")), 404, "wecom_not_configured")
    finally:
        ctx.settings = settings


def test_an_address_with_too_many_failed_sign_ins_has_to_wait(wecom: Api, team, fake) -> None:
    fake.state.set_wecom_login(userid="zhangwei")
    ctx = wecom.ctx
    settings = ctx.settings
    ctx.settings = settings.model_copy(update={"auth_failures_per_minute": 2})
    try:
        office = Person(wecom, fake)
        office.browser.headers["X-Forwarded-For"] = "203.0.113.77"  # via the trusted proxy (127.0.0.1)
        # The limit counts per minute of the clock: start early in a minute, so the attempts share one.
        while time.time() % 60 > 40:
            time.sleep(0.5)
        for _ in range(2):
            refused_page(office.sign_in(), 403, "wecom_not_bound")
        refused_page(Answer(office.browser.get("/console/auth/wecom")), 429, "too_many_requests")
        # Another address is not affected.
        fake.state.set_wecom_login(userid="alice")
        assert signed_in_as(wecom, Person(wecom, fake).sign_in()) == "李丽"
    finally:
        ctx.settings = settings
