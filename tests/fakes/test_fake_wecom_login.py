"""The fake's WeCom sign-in, over real HTTP: OAuth and QR login send the browser back with a fresh code,
getuserinfo spends it once within 5 minutes, and the platform's refusals and faults are there to test with."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from leadpush_fakes.wechat import FakeWeChatState
from support.channels import FakeWeChatServer

CORPID, SECRET, AGENTID = "ww-corp", "ww-secret", 1000002
SITE = "https://crm.example.com/console/auth/wecom/callback"


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def server() -> Iterator[FakeWeChatServer]:
    state = FakeWeChatState(corpid=CORPID, corpsecret=SECRET, agentid=AGENTID, clock=Clock())
    with FakeWeChatServer(state) as running:
        yield running


@pytest.fixture
def client(server: FakeWeChatServer) -> Iterator[httpx.Client]:
    server.state.reset(full=True)
    with httpx.Client(base_url=server.url, timeout=5.0) as c:
        yield c


def oauth(c: httpx.Client, state: str = "s1", **overrides: object) -> httpx.Response:
    params = {
        "appid": CORPID,
        "redirect_uri": SITE,
        "response_type": "code",
        "scope": "snsapi_base",
        "state": state,
        "agentid": AGENTID,
        **overrides,
    }
    return c.get("/connect/oauth2/authorize", params=params)


def code_of(r: httpx.Response, state: str = "s1") -> str:
    assert r.status_code == 302, r.text
    target = urlsplit(r.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == SITE
    query = parse_qs(target.query)
    assert query["state"] == [state]
    return query["code"][0]


def token(c: httpx.Client) -> str:
    return c.get("/cgi-bin/gettoken", params={"corpid": CORPID, "corpsecret": SECRET}).json()["access_token"]


def userinfo(c: httpx.Client, code: str, access_token: str | None = None) -> dict:
    return c.get("/cgi-bin/auth/getuserinfo", params={"access_token": access_token or token(c), "code": code}).json()


def test_oauth_sends_the_member_back_with_a_code_that_works_once(client: httpx.Client) -> None:
    assert client.post("/_fake/wecom/login", json={"userid": "alice"}).json() == {"identity": {"userid": "alice"}}
    code = code_of(oauth(client))
    assert userinfo(client, code) == {"errcode": 0, "errmsg": "ok", "userid": "alice"}
    again = userinfo(client, code)
    assert again["errcode"] == 40029 and again["errmsg"].startswith("invalid code rid: ")
    assert code_of(oauth(client)) != code  # every sign-in gets a fresh code


def test_a_code_expires_after_five_minutes(server: FakeWeChatServer, client: httpx.Client) -> None:
    server.state.set_wecom_login(userid="alice")
    kept, late = code_of(oauth(client)), code_of(oauth(client))
    access = token(client)
    server.state.advance(299)
    assert userinfo(client, kept, access)["userid"] == "alice"
    server.state.advance(2)
    assert userinfo(client, late, access)["errcode"] == 40029


def test_the_qr_login_page_confirms_on_the_phone(client: httpx.Client) -> None:
    client.post("/_fake/wecom/login", json={"openid": "o-outsider"})
    params = {"login_type": "CorpApp", "appid": CORPID, "agentid": AGENTID, "redirect_uri": SITE, "state": "q"}
    page = client.get("/wwlogin/sso/login", params=params)
    assert page.status_code == 200 and "确认登录" in page.text and "o-outsider" in page.text
    confirm = re.search(r'id="confirm" href="([^"]+)"', page.text)
    assert confirm is not None
    code = code_of(client.get(confirm.group(1).replace("&amp;", "&")), state="q")
    # Someone outside the corp: an openid, no userid.
    assert userinfo(client, code) == {"errcode": 0, "errmsg": "ok", "openid": "o-outsider"}


def test_bad_links_and_no_identity_get_an_error_page(client: httpx.Client) -> None:
    assert oauth(client).status_code == 409  # nobody set to sign in
    client.post("/_fake/wecom/login", json={"userid": "alice"})
    assert oauth(client, appid="ww-other").status_code == 400
    assert oauth(client, agentid=1).status_code == 400
    assert oauth(client, redirect_uri="javascript:alert(1)").status_code == 400
    sso = {"login_type": "ServiceApp", "appid": CORPID, "agentid": AGENTID, "redirect_uri": SITE}
    assert client.get("/wwlogin/sso/login?" + urlencode(sso)).status_code == 400
    assert client.post("/_fake/wecom/login", json={"userid": ""}).status_code == 400


def test_token_is_checked_before_the_code_is_spent(server: FakeWeChatServer, client: httpx.Client) -> None:
    client.post("/_fake/wecom/login", json={"userid": "alice"})
    code = code_of(oauth(client))
    old = token(client)
    server.state.expire_tokens()
    assert userinfo(client, code, old)["errcode"] == 42001
    assert userinfo(client, code, "no-such-token")["errcode"] == 40001
    assert userinfo(client, code)["userid"] == "alice"  # a new token, and the code still works
    assert client.get("/cgi-bin/auth/getuserinfo", params={"access_token": token(client)}).json()["errcode"] == 41008


def test_an_untrusted_redirect_domain_gets_50001(client: httpx.Client) -> None:
    client.post("/_fake/config", json={"wecom_trusted_domains": ["crm.example.com"]})
    client.post("/_fake/wecom/login", json={"userid": "alice"})
    assert userinfo(client, code_of(oauth(client)))["userid"] == "alice"
    elsewhere = "https://evil.example.net/cb"
    r = oauth(client, redirect_uri=elsewhere)
    code = parse_qs(urlsplit(r.headers["location"]).query)["code"][0]
    assert userinfo(client, code)["errcode"] == 50001


def test_faults_can_be_injected_into_getuserinfo(client: httpx.Client) -> None:
    client.post("/_fake/wecom/login", json={"userid": "alice"})
    code = code_of(oauth(client))
    client.post("/_fake/faults", json={"path": "/cgi-bin/auth/getuserinfo", "errcode": -1, "count": 1})
    assert userinfo(client, code)["errcode"] == -1
    assert userinfo(client, code)["userid"] == "alice"  # the fault fired before the code was looked at
