"""The users page in a real browser: an admin manages people and teams, a manager looks at their team.

Stories at a desk (1280 px) and on a phone (375 px), against a real server on SQLite (the API behind it
is tested on both databases in tests/teams and tests/users). The tests also save screenshots.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from support import Api
from support.browser import DESKTOP, PHONE, Consoles  # the `browser` and `consoles` fixtures: a plugin (conftest)

from leadpush.users.models import User

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("stack", ["sqlite"], indirect=True)]
SCREENS = pytest.mark.parametrize("screen", ["desktop", "phone"])
VIEWPORTS = {"desktop": DESKTOP, "phone": PHONE}
MONDAY_MORNING = datetime(2026, 3, 2, 1, 5, tzinfo=UTC)  # 09:05 in Shanghai: the same screenshots every run


@pytest.fixture
def crm(api: Api) -> Api:
    """The running service with its clock at a fixed Monday morning (request before `team`)."""
    api.ctx.clock.set(MONDAY_MORNING)
    return api


def no_horizontal_overflow(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"page is {width}px wide at {page.viewport_size['width']}px"


def user_row(page: Any, name: str) -> Any:
    return page.locator("#users tbody tr", has=page.get_by_text(name, exact=True))


def cell(row: Any, label: str) -> str:
    return row.locator(f"td[data-label='{label}']").inner_text().strip()


def login(api: Api, login_name: str, password: str) -> Any:
    return api.client().post("/api/auth/login", json={"loginName": login_name, "password": password})


def new_token(page: Any, previous: str | None = None) -> str:
    """The token the page shows once (waiting until it is not `previous`)."""
    box = page.locator("#token-value")
    box.wait_for()
    page.wait_for_function(
        "prev => { const t = document.getElementById('token-value').textContent; return t && t !== prev; }",
        arg=previous or "",
    )
    return box.inner_text().strip()


@SCREENS
def test_an_admin_creates_edits_binds_reissues_and_deactivates_a_salesperson(crm, team, consoles: Consoles, screen):
    admin = consoles.new(crm.url, viewport=VIEWPORTS[screen])
    page = admin.sign_in(team.admin.token, "/console/users")
    admin.ready()
    assert page.get_by_role("link", name="用户").get_attribute("aria-current") == "page"

    # A new salesperson in team A: the page shows their first token once.
    page.get_by_text("新建用户", exact=True).click()
    form = page.locator("#create-form")
    form.get_by_label("姓名").fill("周杰")
    form.get_by_label("角色").select_option("sales")
    form.get_by_label("团队").select_option("A")
    form.get_by_label("登录名（可选）", exact=True).fill("zhoujie")
    form.get_by_label("初始密码").fill("Zhou-2026-pass")
    page.get_by_role("button", name="创建用户").click()
    page.get_by_role("status").filter(has_text="用户已创建：周杰").wait_for()
    first_token = new_token(page)
    assert first_token.startswith("lp_")
    zhou = user_row(page, "周杰")
    assert (cell(zhou, "角色"), cell(zhou, "团队"), cell(zhou, "线索上限")) == ("销售", "A", "不限")
    assert (cell(zhou, "登录名"), cell(zhou, "企业微信"), cell(zhou, "状态")) == ("zhoujie", "未绑定", "在职")
    assert login(crm, "zhoujie", "Zhou-2026-pass").status_code == 200  # the initial password signs in too
    page.get_by_role("button", name="我已保存，关闭").click()

    # 周杰 signs in with it and keeps the console open on their own device.
    zhou_console = consoles.new(crm.url, viewport=VIEWPORTS[screen])
    closed: list[str] = []
    zhou_console.page.on("websocket", lambda ws: ws.on("close", lambda _: closed.append(ws.url)))
    zhou_page = zhou_console.sign_in(first_token, "/console/inbox")
    zhou_console.ready()
    zhou_console.live()

    # Capacity and the WeCom id, edited in the page.
    zhou.get_by_role("button", name="编辑用户：周杰").click()
    editor = page.locator("#edit-form")
    editor.get_by_label("线索上限").fill("5")
    editor.get_by_label("企业微信 userid").fill("zhoujie")
    page.get_by_role("button", name="保存修改").click()
    page.get_by_role("status").filter(has_text="用户已更新：周杰").wait_for()
    user_row(page, "周杰").locator("td[data-label='企业微信']", has_text="已绑定").wait_for()
    assert cell(user_row(page, "周杰"), "线索上限") == "5"
    stored = next(u for u in crm.client(team.admin).get("/api/users").json()["data"] if u["name"] == "周杰")
    assert (stored["capacity"], stored["wecomUserid"], stored["team"]) == (5, "zhoujie", "A")
    page.evaluate("window.scrollTo(0, 0)")
    admin.screenshot("users" if screen == "desktop" else "users-phone")
    if screen == "phone":
        no_horizontal_overflow(page)

    # A second token for a new device, shown once; it signs in as 周杰.
    page.get_by_role("button", name="签发新令牌").click()
    second_token = new_token(page, first_token)
    assert second_token != first_token
    if screen == "phone":
        no_horizontal_overflow(page)  # the long token wraps
    assert crm.client(second_token).get("/api/me").json()["data"]["name"] == "周杰"

    # Locked out after too many failed sign-ins: the page says until when; a password reset lifts it.
    with crm.ctx.db.write() as session:
        session.execute(
            update(User).where(User.name == "周杰").values(locked_until=datetime.now(UTC) + timedelta(minutes=15))
        )
    page.reload()
    admin.ready()
    assert cell(user_row(page, "周杰"), "锁定至") != "—"
    user_row(page, "周杰").get_by_role("button", name="编辑用户：周杰").click()
    page.get_by_label("新密码").fill("Zhou-new-pass-2")
    page.get_by_role("button", name="重置密码").click()
    page.get_by_role("status").filter(has_text="密码已重置").wait_for()
    assert cell(user_row(page, "周杰"), "锁定至") == "—"
    assert login(crm, "zhoujie", "Zhou-new-pass-2").status_code == 200
    assert login(crm, "zhoujie", "Zhou-2026-pass").status_code == 401

    # Deactivating asks in the page, then ends 周杰's sign-in: their open page goes to the sign-in page.
    page.get_by_role("button", name="停用账号").click()
    assert "实时连接会立即断开" in page.locator("#confirm-text").inner_text()
    page.get_by_role("button", name="确认停用").click()
    page.get_by_role("status").filter(has_text="已停用：周杰").wait_for()
    assert cell(user_row(page, "周杰"), "状态") == "已停用"
    zhou_page.wait_for_url("**/console/login**")
    assert closed  # the live socket was closed
    assert zhou_page.evaluate("localStorage.getItem('leadpush.console.token')") is None
    assert crm.client(second_token).get("/api/me").status_code == 401
    page.get_by_role("button", name="启用账号").wait_for()  # and it can be undone


@SCREENS
def test_an_admin_creates_renames_and_deletes_teams_and_sees_why_a_full_team_stays(crm, team, consoles, screen):
    admin = consoles.new(crm.url, viewport=VIEWPORTS[screen])
    page = admin.sign_in(team.admin.token, "/console/users")
    admin.ready()
    teams = page.locator("#teams tbody tr")
    row_a = teams.filter(has_text="王经理")
    assert "3 人" in row_a.inner_text()

    page.get_by_label("新团队名称").fill("华南组")
    page.get_by_role("button", name="创建团队").click()
    page.get_by_role("status").filter(has_text="团队已创建：华南组").wait_for()
    page.get_by_role("button", name="改名团队：华南组").click()
    page.get_by_label("团队「华南组」的新名称").fill("华南一组")
    page.get_by_role("button", name="保存", exact=True).click()
    page.get_by_role("status").filter(has_text="团队「华南组」已改名为「华南一组」").wait_for()
    # The new name is at once a team people can be put in.
    options = page.locator("#create-form").get_by_label("团队").locator("option").all_text_contents()
    assert options == ["无团队", "A", "B", "华南一组"]

    # Team A has people: deleting it is refused, and the page says why.
    delete_a = page.get_by_role("button", name="删除团队：A")
    delete_a.click()
    delete_a.click()  # asks twice, in the page
    page.get_by_role("status").filter(has_text="还有3 名成员").wait_for()
    assert teams.filter(has_text="王经理").count() == 1
    if screen == "phone":
        no_horizontal_overflow(page)

    delete = page.get_by_role("button", name="删除团队：华南一组")
    delete.click()
    delete.click()
    page.get_by_role("status").filter(has_text="团队「华南一组」已删除").wait_for()
    assert teams.count() == 2


@SCREENS
def test_a_manager_sees_only_their_team_without_edit_buttons(crm, team, consoles: Consoles, screen):
    manager = consoles.new(crm.url, viewport=VIEWPORTS[screen])
    page = manager.sign_in(team.manager.token, "/console/users")
    manager.ready()
    names = page.locator("#users tbody tr td[data-label='姓名']").all_inner_texts()
    assert names == ["王经理", "李丽", "赵强"]
    assert "只读" in page.locator("#scope-note").inner_text()
    assert cell(user_row(page, "李丽"), "企业微信") == "已绑定"
    assert page.get_by_role("button", name="编辑用户：李丽").count() == 0
    # Nothing to change here but their team's default quiet hours (issue 16).
    assert page.locator("main button:visible").all_inner_texts() == ["保存团队默认"]
    assert page.get_by_text("新建用户", exact=True).is_hidden()
    team_rows = page.locator("#teams tbody tr")
    assert team_rows.count() == 1 and "王经理" in team_rows.inner_text()
    manager.screenshot("users-manager" if screen == "desktop" else "users-manager-phone")
    if screen == "phone":
        no_horizontal_overflow(page)

    # Salespeople have no users page.
    alice = consoles.new(crm.url, viewport=VIEWPORTS[screen])
    alice_page = alice.sign_in(team.alice.token, "/console/users")
    alice_page.get_by_role("status").filter(has_text="您的角色无权使用此页面").wait_for()
    assert alice_page.get_by_role("link", name="用户").is_hidden()
