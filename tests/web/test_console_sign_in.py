"""Signing in to the console in a real browser (Debian's chromium), at a desk and on a 375 px phone.

People sign in with a login name and password (or an API token, the second form), are told clearly why not,
sign out so that their live inbox really ends, change their password on 我的账号 and manage the API tokens
their integrations use. Each story runs at both sizes; SQLite only, like the other console tests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from support import Api, Person, ok
from support.browser import DESKTOP, PHONE, TOKEN_KEY, Console, Consoles

SQLITE_ONLY = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
SIZES = pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
MONDAY_MORNING = datetime(2026, 3, 2, 1, 5, tzinfo=UTC)  # 09:05 in Shanghai
EXPIRED = "登录已失效，请重新登录"


@pytest.fixture
def crm(api: Api) -> Api:
    """The running service with its clock at a fixed Monday morning (request before `team`)."""
    api.ctx.clock.set(MONDAY_MORNING)
    return api


def give_password(crm: Api, admin: Person, person: Person, login: str, password: str) -> None:
    """What an admin does: give someone a login name and a first password."""
    ok(crm.client(admin).patch(f"/api/users/{person.id}", json={"loginName": login}))
    ok(crm.client(admin).post(f"/api/users/{person.id}/password", json={"newPassword": password}))


def assign_new_lead(crm: Api, manager: Person, to: Person, name: str) -> dict:
    lead = crm.lead(manager, name=name, phone="13900002222", source="官网表单")
    ok(crm.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": to.id}))
    return lead


def no_horizontal_overflow(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"page is {width}px wide at {page.viewport_size['width']}px"


def try_password(page: Any, login: str, password: str) -> str:
    """Type a login name and password on the sign-in page, press Enter, and read the error it shows."""
    error = page.locator("#login-error")
    page.evaluate("document.getElementById('login-error').hidden = true")  # the next answer shows it again
    page.get_by_label("登录名").fill(login)
    page.get_by_label("密码", exact=True).fill(password)
    page.get_by_label("密码", exact=True).press("Enter")
    error.wait_for()
    return error.inner_text()


def ended(url: str) -> bool:
    """The sign-in page, saying the session has ended."""
    return "/console/login" in url and "expired=1" in url


def session_works(crm: Api, token: str) -> bool:
    return crm.client(token).get("/api/me").status_code == 200


def other_tab(me: Console, path: str) -> Any:
    """A second tab of the same browser (it shares the session in localStorage)."""
    tab = me.context.new_page()
    tab.on("pageerror", lambda error: me.problems.append(f"page error (second tab): {error}"))
    tab.on("dialog", lambda dialog: (me.dialogs.append(dialog.message), dialog.dismiss()))
    tab.goto(me.base_url + path)
    return tab


@SQLITE_ONLY
@SIZES
def test_password_sign_in_lands_each_role_on_its_start_page(crm, team, consoles: Consoles, viewport):
    give_password(crm, team.admin, team.manager, "wang", "Lead-push-9")
    give_password(crm, team.admin, team.alice, "13800000001", "alice-pass-1")
    suffix = "" if viewport == DESKTOP else "-phone"

    manager = consoles.new(crm.url, viewport=viewport)
    page = manager.open("/console")
    page.wait_for_url("**/console/login**")  # no session yet
    page.get_by_label("登录名").wait_for()
    assert page.get_by_label("API 令牌").is_visible()  # the second way in
    assert page.locator("#wecom-login").count() == 1
    no_horizontal_overflow(page)
    manager.screenshot(f"sign-in{suffix}")
    manager.sign_in_with_password("wang", "Lead-push-9")
    page.wait_for_url("**/console/customers")
    page.locator("#me-name", has_text="王经理").wait_for()
    token = page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')")
    assert token.startswith("lps_")  # a session, not an API token

    alice = consoles.new(crm.url, viewport=viewport)
    inbox = alice.sign_in_with_password("13800000001", "alice-pass-1")
    inbox.wait_for_url("**/console/inbox")
    alice.ready()
    alice.live()
    assert inbox.get_by_role("link", name="我的账号").is_visible()

    # The API-token form still works, and it too leaves only a session in the browser.
    carol = consoles.new(crm.url, viewport=viewport)
    page = carol.sign_in(team.carol.token)
    page.wait_for_url("**/console/inbox")
    assert page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')").startswith("lps_")


@SQLITE_ONLY
@SIZES
def test_a_wrong_password_an_inactive_account_and_a_lockout_are_told_in_chinese(
    crm, team, consoles: Consoles, viewport
):
    give_password(crm, team.admin, team.alice, "lili", "alice-pass-1")
    give_password(crm, team.admin, team.bob, "zhaoqiang", "bob-pass-12")
    ok(crm.client(team.admin).patch(f"/api/users/{team.bob.id}", json={"active": False}))
    me = consoles.new(crm.url, viewport=viewport)
    page = me.open("/console/login")

    assert try_password(page, "lili", "wrong-password") == "登录名或密码错误"
    assert "/console/login" in page.url
    assert page.evaluate("document.activeElement.id") == "password"  # ready to type it again
    assert try_password(page, "nobody", "whatever-1") == "登录名或密码错误"  # no hint which names exist
    assert "已停用" in try_password(page, "zhaoqiang", "bob-pass-12")
    no_horizontal_overflow(page)

    # Guessing on: after five failures in a row the account is locked on this address, and the page says
    # for how long; even the right password waits.
    for _ in range(3):
        assert try_password(page, "lili", "still-wrong") == "登录名或密码错误"
    locked = try_password(page, "lili", "still-wrong")
    assert "登录失败次数过多" in locked and "15 分钟" in locked, locked
    assert "15 分钟" in try_password(page, "lili", "alice-pass-1")
    assert "/console/login" in page.url
    assert page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')") is None


@SQLITE_ONLY
@SIZES
def test_sign_out_ends_the_live_inbox_on_every_tab_of_that_session(crm, team, consoles: Consoles, viewport):
    give_password(crm, team.admin, team.alice, "lili", "alice-pass-1")
    alice = consoles.new(crm.url, viewport=viewport)
    page = alice.sign_in_with_password("lili", "alice-pass-1", "/console/inbox")
    alice.ready()
    alice.live()
    session = page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')")
    tab = other_tab(alice, "/console/inbox")  # the same session, listening too
    tab.locator("#live-state[data-state='open']").wait_for()

    page.get_by_role("button", name="退出登录").click()
    page.wait_for_url("**/console/login?signedOut=1")
    assert "您已退出登录" in page.locator("#login-info").inner_text()
    assert page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')") is None
    # The server ended the session: it closed the other tab's socket, and that tab says so.
    tab.wait_for_url(ended)
    tab.locator("#login-info", has_text=EXPIRED).wait_for()
    assert not session_works(crm, session)

    # A lead assigned now reaches neither old page, and is waiting in the inbox at the next sign-in.
    assign_new_lead(crm, team.manager, team.alice, "钱七")
    alice.sign_in_with_password("lili", "alice-pass-1", "/console/inbox")
    alice.ready()
    page.locator("#inbox li .title", has_text="您有一条新线索：钱七").wait_for()
    assert tab.locator("#toasts .toast").count() == 0 and "/console/login" in tab.url


@SQLITE_ONLY
@SIZES
def test_changing_the_password_signs_out_other_devices_and_the_old_password_stops_working(
    crm, team, consoles: Consoles, viewport
):
    give_password(crm, team.admin, team.manager, "wang", "Lead-push-9")
    phone = consoles.new(crm.url, viewport=PHONE)  # the manager's other device, with the inbox open
    other = phone.sign_in_with_password("wang", "Lead-push-9", "/console/inbox")
    phone.ready()
    phone.live()

    me = consoles.new(crm.url, viewport=viewport)
    page = me.sign_in_with_password("wang", "Lead-push-9", "/console/customers")
    me.ready()
    page.get_by_role("link", name="我的账号").click()
    page.wait_for_url("**/console/account")
    me.ready()
    assert "wang" in page.locator("#profile").inner_text()
    status = page.locator("#password-status")

    def change(current: str, new: str, again: str, *, says: str) -> None:
        page.get_by_label("当前密码").fill(current)
        page.get_by_label("新密码", exact=True).fill(new)
        page.get_by_label("再次输入新密码").fill(again)
        page.get_by_label("再次输入新密码").press("Enter")
        status.filter(has_text=says).wait_for()

    change("Lead-push-9", "New-secret-7", "New-secret-8", says="两次输入的新密码不一致")
    change("not-it", "New-secret-7", "New-secret-7", says="当前密码不正确")
    change("Lead-push-9", "12345678", "12345678", says="不能全是数字")  # the server's policy, in its words
    change("Lead-push-9", "New-secret-7", "New-secret-7", says="密码已修改")
    assert page.get_by_label("当前密码").input_value() == ""
    no_horizontal_overflow(page)

    # The other device's session ended with the change: its page says so and asks to sign in again.
    other.wait_for_url(ended)
    other.locator("#login-info", has_text=EXPIRED).wait_for()
    # This device stays signed in; after signing out, only the new password works.
    page.reload()
    me.ready()
    page.get_by_role("button", name="退出登录").click()
    page.wait_for_url("**/console/login?signedOut=1")
    assert try_password(page, "wang", "Lead-push-9") == "登录名或密码错误"
    me.sign_in_with_password("wang", "New-secret-7")
    page.wait_for_url("**/console/customers")


@SQLITE_ONLY
@SIZES
def test_a_salesperson_creates_copies_and_revokes_an_api_token_on_the_account_page(
    crm, team, consoles: Consoles, viewport
):
    alice = consoles.new(crm.url, viewport=viewport)
    alice.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=crm.url)
    page = alice.sign_in(team.alice.token, "/console/account")
    alice.ready()
    assert page.locator("#tokens tbody tr").count() >= 1  # the token she signed in with is listed

    page.get_by_label("令牌名称").fill("ERP 对接")
    page.get_by_label("令牌名称").press("Enter")
    shown = page.get_by_label("新令牌")
    shown.wait_for()
    token = shown.input_value()
    assert token.startswith("lp_")
    assert "只显示这一次" in page.locator("#new-token").inner_text()
    page.get_by_role("button", name="复制", exact=True).click()
    page.locator("#tokens-status", has_text="已复制").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == token
    row = page.locator("#tokens tbody tr", has_text="ERP 对接")
    assert token.startswith(row.locator("code").inner_text().rstrip("…"))
    assert "从未使用" in row.inner_text() and "有效" in row.inner_text()
    no_horizontal_overflow(page)
    alice.screenshot("account" if viewport == DESKTOP else "account-phone")

    # The integration uses it; the page shows when it was last used.
    assert session_works(crm, token)
    page.get_by_role("button", name="我已保存").click()
    assert shown.is_hidden()
    page.reload()
    alice.ready()
    assert "从未使用" not in row.inner_text()

    # Revoking asks first, in the page; cancelling keeps it.
    row.get_by_role("button", name="吊销令牌：ERP 对接").click()
    assert "无法访问" in row.inner_text()
    row.get_by_role("button", name="取消吊销令牌：ERP 对接").click()
    assert session_works(crm, token)
    row.get_by_role("button", name="吊销令牌：ERP 对接").click()
    row.get_by_role("button", name="确认吊销令牌：ERP 对接").click()
    page.locator("#tokens-status", has_text="令牌已吊销：ERP 对接").wait_for()
    page.locator("#tokens tbody tr[data-state='revoked']", has_text="ERP 对接").wait_for()
    assert not session_works(crm, token)
    assert page.get_by_role("button", name="吊销令牌：ERP 对接").count() == 0
    assert "/console/account" in page.url  # her own session is untouched


@SQLITE_ONLY
def test_a_session_that_expired_while_the_page_was_open_asks_to_sign_in_again(crm, team, consoles: Consoles):
    give_password(crm, team.admin, team.bob, "zhaoqiang", "bob-pass-12")
    bob = consoles.new(crm.url)
    page = bob.sign_in_with_password("zhaoqiang", "bob-pass-12", "/console/account")
    bob.ready()
    idle = crm.ctx.settings.session_idle_hours

    def overnight(route: Any) -> None:
        # He left the page open overnight: the session has been idle too long when his click arrives. (Time
        # passes only now, so the server's periodic check of open sockets cannot get there first.)
        crm.ctx.clock.advance(hours=idle + 1)
        route.continue_()

    page.route("**/api/tokens", overnight, times=1)
    page.get_by_label("令牌名称").fill("报表脚本")
    page.get_by_role("button", name="生成令牌").click()
    page.wait_for_url(ended)
    page.locator("#login-info", has_text=EXPIRED).wait_for()
    assert page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')") is None
    # Signing in again, right there, brings him back to the page he was on.
    page.get_by_label("登录名").fill("zhaoqiang")
    page.get_by_label("密码", exact=True).fill("bob-pass-12")
    page.get_by_role("button", name="登录", exact=True).click()
    page.wait_for_url("**/console/account")
    bob.ready()
    assert page.locator("#tokens tbody tr", has_text="报表脚本").count() == 0  # nothing was made meanwhile
