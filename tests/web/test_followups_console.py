"""今日跟进 in a real browser: a salesperson plans the next follow-up on a lead's page, sees the day's plans
(and an overdue one) on the 今日跟进 page, is reminded at the planned time, and clears a plan; a manager sees
the team's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect
from support import Api, ok
from support.browser import PHONE, Consoles  # the `browser` and `consoles` fixtures: a plugin (conftest)

SQLITE_ONLY = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
TUESDAY_MORNING = datetime(2026, 3, 3, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai


def cells(row) -> list[str]:
    return [c.strip() for c in row.locator("th, td").all_inner_texts()]


def owned(api: Api, team, to, name: str, phone: str) -> dict:
    return api.lead(team.manager, name=name, phone=phone, assignedTo=to.id)


@SQLITE_ONLY
def test_plan_on_the_lead_page_list_it_for_today_get_reminded_and_clear_it(api: Api, team, consoles: Consoles):
    api.ctx.clock.set(TUESDAY_MORNING)
    late = owned(api, team, team.alice, "早上没跟的", "13800000001")
    lead = owned(api, team, team.alice, "王五", "13800000002")
    bobs = owned(api, team, team.bob, "赵强的客户", "13800000003")
    for which, minutes in ((late, 30), (bobs, 240)):
        at = (TUESDAY_MORNING + timedelta(minutes=minutes)).isoformat()
        ok(api.client(team.manager).put(f"/api/customers/{which['id']}/follow-up-plan", json={"at": at}))
    api.ctx.clock.advance(hours=1)  # 10:00: the 09:30 plan is overdue

    alice = consoles.new(api.url)
    page = alice.sign_in(team.alice.token, f"/console/customers/{lead['id']}")
    alice.ready()
    current = page.locator("#plan-current")
    expect(current).to_have_text("未设置")
    page.get_by_label("下次跟进时间").fill("2026-03-03T15:00")
    page.get_by_label("跟进备注（可选）").fill("确认报价")
    page.get_by_role("button", name="保存计划").click()
    page.get_by_role("status").filter(has_text="下次跟进已设置").wait_for()
    expect(current).to_contain_text("15:00 · 确认报价")
    expect(page.get_by_label("下次跟进时间")).to_have_value("2026-03-03T15:00")
    next_up = page.locator("#info dt", has_text="下次跟进").locator("xpath=following-sibling::dd[1]")
    expect(next_up).to_contain_text("15:00")
    # A time already past is refused, in words.
    page.get_by_label("下次跟进时间").fill("2026-03-03T08:00")
    page.get_by_role("button", name="保存计划").click()
    page.get_by_role("status").filter(has_text="下次跟进时间不能早于现在").wait_for()

    page.get_by_role("link", name="今日跟进").click()
    page.wait_for_url("**/console/follow-ups**")
    alice.ready()
    assert page.title().startswith("今日跟进")
    expect(page.get_by_label("日期")).to_have_value("2026-03-03")
    rows = page.locator("#plans tbody tr")
    expect(rows).to_have_count(2)
    assert cells(rows.nth(0))[1:] == ["早上没跟的", "13800000001", "李丽", "—", "已逾期"]
    assert cells(rows.nth(1))[1:] == ["王五", "13800000002", "李丽", "确认报价", "待跟进"]
    assert "09:30" in cells(rows.nth(0))[0] and "15:00" in cells(rows.nth(1))[0]
    expect(page.locator("#plans-summary")).to_have_text("共 2 条，其中已逾期 1 条")
    assert page.locator("#p-scope").is_hidden()  # a salesperson sees their own
    alice.screenshot("followups")

    # At 15:00 the reminder pops up on her open page.
    alice.live()
    api.ctx.clock.advance(hours=5)
    api.ctx.signals.notifications_committed(set())
    toast = page.locator(".toast", has_text="跟进提醒：客户「王五」")
    toast.wait_for(timeout=30_000)
    expect(toast).to_contain_text("确认报价")

    # The manager sees the team's day.
    manager = consoles.new(api.url)
    team_page = manager.sign_in(team.manager.token, "/console/follow-ups")
    manager.ready()
    team_page.get_by_label("范围").select_option("team")
    team_page.get_by_role("button", name="查询").click()
    team_page.locator("#plans tbody tr", has_text="赵强的客户").wait_for()
    names = [cells(r)[1] for r in team_page.locator("#plans tbody tr").all()]
    assert names == ["早上没跟的", "赵强的客户", "王五"]

    # Back on the lead, she clears the plan: gone from the page and from the day's list.
    page.goto(f"{api.url}/console/customers/{lead['id']}")
    alice.ready()
    page.get_by_role("button", name="清除计划").click()
    page.get_by_role("status").filter(has_text="下次跟进已清除").wait_for()
    expect(current).to_have_text("未设置")
    expect(page.get_by_role("button", name="清除计划")).to_be_hidden()
    page.get_by_role("link", name="今日跟进").click()
    alice.ready()
    expect(page.locator("#plans tbody tr")).to_have_count(1)

    # Recording a follow-up can plan the next one at once.
    page.goto(f"{api.url}/console/customers/{lead['id']}")
    alice.ready()
    page.get_by_label("跟进内容").fill("已发报价")
    page.get_by_label("下次跟进（可选）").fill("2026-03-04T10:00")
    page.get_by_role("button", name="记录跟进").click()
    page.get_by_role("status").filter(has_text="跟进已记录").wait_for()
    expect(current).to_contain_text("10:00")
    expect(page.get_by_label("下次跟进（可选）")).to_have_value("")
    assert alice.problems == [] and alice.dialogs == []

    # On a phone the page fits the screen (the table scrolls inside its frame).
    phone = consoles.new(api.url, viewport=PHONE)
    small = phone.sign_in(team.alice.token, "/console/follow-ups?date=2026-03-04")
    phone.ready()
    small.locator("#plans tbody tr", has_text="王五").wait_for()
    assert small.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
    assert phone.problems == []
