"""The 首次联系 page in a real browser: first-contact rules, the speed-to-lead table per person and team,
and a lead's own time to open and to first follow-up on its detail page."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from playwright.sync_api import expect
from support import Api
from support.browser import Consoles  # the `browser` and `consoles` fixtures: a plugin (conftest)

SQLITE_ONLY = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
MONDAY_MORNING = datetime(2026, 3, 2, 1, 5, tzinfo=UTC)  # 09:05 in Shanghai


def assign(api: Api, who, lead_id: int, to) -> None:
    r = api.client(who).patch(f"/api/customers/{lead_id}/assign", json={"assignedTo": to.id})
    assert r.status_code == 200, r.text


def cells(row) -> list[str]:
    return [c.strip() for c in row.locator("th, td").all_inner_texts()]


@SQLITE_ONLY
def test_speed_page_rules_report_and_the_leads_own_times(api: Api, team, consoles: Consoles):
    api.ctx.clock.set(MONDAY_MORNING)
    manager = consoles.new(api.url)
    page = manager.sign_in(team.manager.token, "/console/speed")
    manager.ready()
    page.get_by_text("新建规则").click()
    page.get_by_label("规则名称").fill("5分钟首次联系")
    page.get_by_label("N：提醒本人（分钟）").fill("5")
    page.get_by_label("M：通知经理（分钟）").fill("15")
    page.get_by_label("K：改派（分钟）").fill("30")
    page.get_by_label("到 K 时").select_option("pool")
    page.get_by_role("button", name="创建规则").click()
    page.get_by_role("status").filter(has_text="首次联系规则已创建").wait_for()
    rule = page.locator("#rules tbody tr", has_text="5分钟首次联系")
    rule.wait_for()  # the table reloads after the message
    assert cells(rule)[:6] == ["5分钟首次联系", "A 组", "全部", "5 分钟", "15 分钟", "30 分钟，退回线索池"]
    rule.get_by_role("button", name="停用规则：5分钟首次联系").click()
    rule.get_by_role("button", name="启用规则：5分钟首次联系").click()
    rule.get_by_role("button", name="停用规则：5分钟首次联系").wait_for()

    # Three leads: 李丽 opens one after 2 minutes and the other after 10 (and follows it up), 赵强 none.
    quick, slow, never = (api.lead(team.manager, name=n) for n in ("快客户", "慢客户", "没看的"))
    assign(api, team.manager, quick["id"], team.alice)
    assign(api, team.manager, slow["id"], team.alice)
    assign(api, team.manager, never["id"], team.bob)
    api.ctx.clock.advance(minutes=2)
    api.client(team.alice).get(f"/api/customers/{quick['id']}")
    api.ctx.clock.advance(minutes=8)
    api.client(team.alice).get(f"/api/customers/{slow['id']}")
    r = api.client(team.alice).post(f"/api/customers/{slow['id']}/follow-ups", json={"content": "已电话联系"})
    assert r.status_code == 201, r.text

    page.get_by_label("开始日期").fill("2026-03-01")
    page.get_by_label("结束日期（含）").fill("2026-03-02")
    page.get_by_role("button", name="查询").click()
    alice_row = page.locator("#report tbody tr", has_text="李丽")
    alice_row.wait_for()
    assert cells(alice_row) == ["李丽", "2", "2", "2 分钟", "10 分钟", "10 分钟", "50%（1/2）", "0"]
    assert cells(page.locator("#report tbody tr", has_text="赵强")) == [
        "赵强",
        "1",
        "0",
        "—",
        "—",
        "—",
        "0%（0/1）",
        "1",
    ]
    assert cells(page.locator("#report tfoot tr"))[:3] == ["合计", "3", "2"]
    page.get_by_label("按").select_option("team")
    page.get_by_role("button", name="查询").click()
    team_row = page.locator("#report tbody tr", has_text="A 组")
    team_row.wait_for()
    manager.screenshot("speed")
    assert cells(team_row)[:3] == ["A 组", "3", "2"]

    # The lead's detail shows its own times, to its owner.
    alice = consoles.new(api.url)
    detail = alice.sign_in(team.alice.token, f"/console/customers/{slow['id']}")
    alice.ready()
    info = detail.locator("#info")
    assert (
        info.locator("dt", has_text="首次打开用时").locator("xpath=following-sibling::dd[1]").inner_text() == "10 分钟"
    )
    assert (
        info.locator("dt", has_text="首次跟进用时").locator("xpath=following-sibling::dd[1]").inner_text() == "10 分钟"
    )
    # Her first follow-up of the other lead, recorded on its page, shows at once.
    other = alice.open(f"/console/customers/{quick['id']}")
    alice.ready()
    first = other.locator("#info dt", has_text="首次跟进用时").locator("xpath=following-sibling::dd[1]")
    assert first.inner_text() == "未跟进"
    other.get_by_label("跟进内容").fill("微信已加")
    other.get_by_role("button", name="记录跟进").click()
    other.get_by_role("status").filter(has_text="跟进已记录").wait_for()
    expect(first).to_have_text("10 分钟")
    # A salesperson's 首次联系 page: their own row, no rules.
    own = alice.open("/console/speed")
    alice.ready()
    own.get_by_label("开始日期").fill("2026-03-01")
    own.get_by_label("结束日期（含）").fill("2026-03-02")
    own.get_by_role("button", name="查询").click()
    own.locator("#report tbody tr", has_text="李丽").wait_for()
    assert own.locator("#report tbody tr").count() == 1
    assert own.locator("#rules-title").is_hidden()

    # Deleting asks twice, in the page.
    remove = rule.get_by_role("button", name="删除规则：5分钟首次联系")
    remove.click()
    remove.click()
    page.get_by_role("status").filter(has_text="首次联系规则已删除").wait_for()
    page.locator("#rules-empty").wait_for()
