"""通知设置 in a real browser: a salesperson picks channels per kind of notice and quiet hours on 我的账号, sees
why a box cannot be ticked; a manager sets their team's default quiet hours on the users page.

Against a real server on SQLite (the API behind it is tested on both databases in tests/notify).
"""

from __future__ import annotations

from typing import Any

import pytest
from support import Api, ok
from support.browser import PHONE, Consoles  # the `browser` and `consoles` fixtures: a plugin (conftest)

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("stack", ["sqlite"], indirect=True)]
URL = "/api/me/notification-preferences"


@pytest.fixture
def configured(api: Api, monkeypatch: pytest.MonkeyPatch) -> Api:
    """Both push channels configured (nothing is sent in these tests: only what may be chosen changes), and
    WeCom the only channel people may choose for 线索被收回."""
    settings = api.ctx.settings
    for name, value in {
        "wechat_appid": "wx-console",
        "wechat_secret": "wx-secret",
        "wechat_template_id": "TPL",
        "wechat_api_base": "http://127.0.0.1:9",
        "wecom_corpid": "ww-console",
        "wecom_secret": "ww-secret",
        "wecom_agentid": 1000002,
        "wecom_api_base": "http://127.0.0.1:9",
        "preference_channels": {"taken_back": ["wecom"]},
    }.items():
        monkeypatch.setattr(settings, name, value)
    return api


def box(page: Any, category: str, channel: str) -> Any:
    return page.locator(f"#pref-{category}-{channel}")


def row(page: Any, category: str) -> Any:
    return page.locator(f"#notify-channels tr[data-category='{category}']")


def stored(api: Api, who: Any) -> dict:
    return ok(api.client(who).get(URL))


def chosen(api: Api, who: Any, category: str) -> list[str] | None:
    return next(c for c in stored(api, who)["categories"] if c["category"] == category)["chosenChannels"]


def test_a_salesperson_chooses_channels_per_kind_of_notice_and_goes_back_to_the_default(
    configured: Api, team, consoles: Consoles
) -> None:
    api = configured
    alice = consoles.new(api.url)
    page = alice.sign_in(team.alice.token, "/console/account")
    alice.ready()
    assert row(page, "new_leads").locator("th").inner_text() == "新线索"
    # The defaults: new leads on WeChat (then WeCom), warnings on WeCom only.
    assert box(page, "new_leads", "wechat").is_checked() and box(page, "new_leads", "wecom").is_checked()
    assert not box(page, "transfer_warning", "wechat").is_checked()
    assert box(page, "transfer_warning", "wecom").is_checked()
    assert row(page, "transfer_warning").locator("td[data-label='设置']").inner_text() == "默认"
    # Warnings on WeChat too.
    box(page, "transfer_warning", "wechat").check()
    status = page.locator("#notify-status")
    status.get_by_text("通知设置已保存：流转预警（开启微信小程序）").wait_for()
    assert row(page, "transfer_warning").locator("td[data-label='设置']").inner_text() == "已自定义"
    assert chosen(api, team.alice, "transfer_warning") == ["wechat", "wecom"]
    # New leads not on WeChat.
    box(page, "new_leads", "wechat").uncheck()
    status.get_by_text("通知设置已保存：新线索（关闭微信小程序）").wait_for()
    assert chosen(api, team.alice, "new_leads") == ["wecom"]
    # ... and back to the default.
    page.get_by_role("button", name="恢复默认：新线索").click()
    status.get_by_text("通知设置已保存：新线索已恢复默认").wait_for()
    assert box(page, "new_leads", "wechat").is_checked()
    assert page.get_by_role("button", name="恢复默认：新线索").is_disabled()
    assert chosen(api, team.alice, "new_leads") is None
    # What the admin did not open for people cannot be ticked, and the page says why.
    assert box(page, "taken_back", "wechat").is_disabled()
    assert "管理员未开放" in row(page, "taken_back").locator("td[data-label='微信小程序']").inner_text()
    page.evaluate(
        "window.scrollTo(0, document.querySelector('#notify-status').getBoundingClientRect().top + scrollY - 160)"
    )
    alice.screenshot("notification-settings")
    assert box(page, "taken_back", "wecom").is_enabled()
    # After a reload the page shows what is stored.
    page.reload()
    alice.ready()
    assert box(page, "transfer_warning", "wechat").is_checked()


def test_quiet_hours_custom_working_hours_and_the_urgent_override(configured: Api, team, consoles: Consoles) -> None:
    api = configured
    alice = consoles.new(api.url)
    page = alice.sign_in(team.alice.token, "/console/account")
    alice.ready()
    assert page.get_by_label("跟随团队").is_checked()
    assert "A：不设置" in page.locator("#q-team-text").inner_text()
    assert page.get_by_label("紧急通知不受免打扰限制（首次联系提醒、超时升级）").is_checked()
    # A custom period needs both ends: the page says so before asking the server.
    page.get_by_label("自定义").check()
    page.get_by_label("免打扰开始时间").fill("22:00")
    page.get_by_role("button", name="保存免打扰设置").click()
    page.locator("#quiet-status").get_by_text("自定义免打扰时段需要同时填写开始和结束时间").wait_for()
    page.get_by_label("免打扰结束时间").fill("07:30")
    page.get_by_label("紧急通知不受免打扰限制（首次联系提醒、超时升级）").uncheck()
    page.get_by_role("button", name="保存免打扰设置").click()
    page.locator("#quiet-status").get_by_text("通知设置已保存：22:00–07:30").wait_for()
    prefs = stored(api, team.alice)
    assert (prefs["quietMode"], prefs["quietStart"], prefs["quietEnd"], prefs["urgentOverride"]) == (
        "custom",
        "22:00",
        "07:30",
        False,
    )
    # The server's refusal is shown as it is.
    page.get_by_label("免打扰结束时间").fill("22:00")
    page.get_by_role("button", name="保存免打扰设置").click()
    page.locator("#quiet-status").get_by_text("免打扰的开始时间和结束时间不能相同").wait_for()
    page.get_by_label("工作时间以外（按下方“我的工作时间”）").check()
    page.get_by_role("button", name="保存免打扰设置").click()
    page.locator("#quiet-status").get_by_text("通知设置已保存：工作时间以外").wait_for()
    assert stored(api, team.alice)["quietMode"] == "working_hours"


def test_someone_not_bound_sees_why_they_cannot_choose_a_channel(configured: Api, team, consoles: Consoles) -> None:
    bob = consoles.new(configured.url, viewport=PHONE)
    page = bob.sign_in(team.bob.token, "/console/account")
    bob.ready()
    assert box(page, "new_leads", "wecom").is_disabled() and box(page, "new_leads", "wechat").is_disabled()
    assert "未绑定企业微信" in row(page, "new_leads").locator("td[data-label='企业微信']").inner_text()
    assert page.locator("#notify-bindings").inner_text().startswith("未绑定微信小程序，未绑定企业微信")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the account page is {width}px wide on a phone"


def test_a_manager_sets_their_teams_default_quiet_hours(configured: Api, team, consoles: Consoles) -> None:
    api = configured
    manager = consoles.new(api.url)
    page = manager.sign_in(team.manager.token, "/console/users")
    manager.ready()
    form = page.locator("#team-quiet-form")
    form.wait_for()
    assert [o.strip() for o in form.locator("#tq-team option").all_inner_texts()] == ["A"]  # their own team only
    assert page.locator("#tq-start").is_disabled()
    page.locator("#tq-mode").select_option("custom")
    page.locator("#tq-start").fill("21:00")
    page.locator("#tq-end").fill("08:00")
    page.get_by_role("button", name="保存团队默认").click()
    page.locator("#team-quiet-status").get_by_text("团队「A」的默认免打扰时段已保存：21:00–08:00").wait_for()
    # Alice follows the team: her page says what that means now.
    alice = consoles.new(api.url)
    alice_page = alice.sign_in(team.alice.token, "/console/account")
    alice.ready()
    assert "A：21:00–08:00" in alice_page.locator("#q-team-text").inner_text()
