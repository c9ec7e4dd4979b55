"""WeCom sign-in (企业微信登录) in a real browser (Debian's chromium), against the fake WeCom over HTTP.

A salesperson clicks 企业微信登录, confirms on the fake's QR login page (standing for the phone's scan) and is
back in the console, signed in as the user bound to their WeCom account, with the live inbox working.
Inside WeCom's own browser the sign-in starts by itself. SQLite only, like the other browser tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from support import Api, wipe
from support.browser import DESKTOP, PHONE, TOKEN_KEY, Consoles
from support.channels import FakeWeChatServer, leadpush_against

pytestmark = pytest.mark.slow

MONDAY_MORNING = datetime(2026, 3, 2, 1, 5, tzinfo=UTC)  # 09:05 in Shanghai: the same screenshots every run
WXWORK_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148 wxwork/4.1.22 MicroMessenger/7.0.1 Language/zh ColorScheme/Light"
)


@pytest.fixture(scope="module")
def site(fake: FakeWeChatServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """leadpush on SQLite whose WeCom app (messages and sign-in) is the fake."""
    with leadpush_against(fake, "sqlite", str(tmp_path_factory.mktemp("wecom-sign-in"))) as stack:
        yield stack


@pytest.fixture
def crm(site: Any, fake: FakeWeChatServer) -> Iterator[Api]:
    ctx, server = site
    fake.state.reset(full=True)
    wipe(ctx)
    ctx.clock.set(MONDAY_MORNING)
    api = Api(url=server.url, ctx=ctx)
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def people(crm: Api) -> SimpleNamespace:
    return SimpleNamespace(
        manager=crm.user("王经理", "manager", "A"),
        alice=crm.user("李丽", "sales", "A", wecom_userid="alice"),
    )


def no_horizontal_overflow(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"page is {width}px wide at {page.viewport_size['width']}px"


def hears_about_a_new_lead_live(crm: Api, people: SimpleNamespace, page: Any) -> None:
    lead = crm.lead(people.manager, name="周杰", phone="13700000001")
    r = crm.client(people.manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": people.alice.id})
    assert r.status_code == 200, r.text
    page.locator("#toasts .toast", has_text="您有一条新线索：周杰").wait_for()
    assert page.locator("#inbox li .title").first.inner_text() == "您有一条新线索：周杰"


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "375px"])
def test_a_salesperson_signs_in_with_wecom_and_the_live_inbox_works(
    crm: Api, people: SimpleNamespace, fake: FakeWeChatServer, consoles: Consoles, viewport: dict[str, int]
) -> None:
    fake.state.set_wecom_login(userid="alice")  # who scans the QR code with their phone
    alice = consoles.new(crm.url, viewport)
    page = alice.open("/console/inbox")
    page.wait_for_url("**/console/login?next=%2Fconsole%2Finbox")
    wecom_button = page.get_by_role("link", name="企业微信登录")
    wecom_button.wait_for()
    no_horizontal_overflow(page)
    alice.screenshot("wecom-sign-in" if viewport == DESKTOP else "wecom-sign-in-phone")

    wecom_button.click()
    page.wait_for_url(lambda url: url.startswith(fake.url + "/wwlogin/sso/login"))
    page.get_by_role("link", name="确认登录").click()  # the phone's scan and confirmation

    page.wait_for_url("**/console/inbox")
    page.locator("#me-name", has_text="李丽").wait_for()
    alice.ready()
    alice.live()
    assert page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')").startswith("lps_")
    hears_about_a_new_lead_live(crm, people, page)
    no_horizontal_overflow(page)


def test_inside_wecom_the_sign_in_starts_by_itself(
    crm: Api, people: SimpleNamespace, fake: FakeWeChatServer, consoles: Consoles
) -> None:
    fake.state.set_wecom_login(userid="alice")
    alice = consoles.new(crm.url, PHONE, user_agent=WXWORK_UA)
    page = alice.open("/console/inbox")
    # Sign-in page → WeCom's OAuth (which knows the member) → back, signed in: no click.
    page.wait_for_url("**/console/inbox")
    page.locator("#me-name", has_text="李丽").wait_for()
    alice.ready()
    alice.live()
    hears_about_a_new_lead_live(crm, people, page)

    # Signing out inside WeCom stays signed out (the sign-in does not start again by itself).
    page.get_by_role("button", name="退出登录").click()
    page.wait_for_url("**/console/login?signedOut=1")
    page.get_by_role("link", name="企业微信登录").wait_for()
    assert "您已退出登录" in page.locator("#login-info").inner_text()


@pytest.mark.parametrize("user_agent", [None, WXWORK_UA], ids=["desktop", "inside-wecom"])
def test_a_wecom_account_bound_to_nobody_is_told_to_ask_an_admin(
    crm: Api, people: SimpleNamespace, fake: FakeWeChatServer, consoles: Consoles, user_agent: str | None
) -> None:
    fake.state.set_wecom_login(userid="zhangwei")
    stranger = consoles.new(crm.url, DESKTOP if user_agent is None else PHONE, user_agent=user_agent)
    page = stranger.open("/console/login")
    if user_agent is None:
        page.get_by_role("link", name="企业微信登录").click()
        page.get_by_role("link", name="确认登录").click()
    error = page.locator("#wecom-error")
    error.wait_for()
    assert error.get_attribute("data-code") == "wecom_not_bound"
    assert "zhangwei" in error.inner_text()
    assert "请管理员在用户管理中绑定企业微信账号" in error.inner_text()
    page.wait_for_url("**/console/login")  # the callback's address (code, state) is not left in the bar
    assert page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')") is None
    # No loop inside WeCom: the page stays, with the button to try again once an admin has bound the account.
    page.get_by_role("link", name="企业微信登录").wait_for()
    assert page.url.endswith("/console/login")
    if user_agent is None:
        stranger.screenshot("wecom-sign-in-unbound")
