"""The 分配规则 page in a real browser: a manager creates a round-robin rule for their team, asks who would get
a lead, marks a salesperson on leave and sees the answer change; the lead then really goes to that person.

On SQLite (the API behind it is tested on both databases in tests/routing).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from support import Api, ok
from support.browser import Consoles  # the `browser` and `consoles` fixtures: a plugin (conftest)

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("stack", ["sqlite"], indirect=True)]
MONDAY_MORNING = datetime(2026, 3, 2, 1, 5, tzinfo=UTC)  # 09:05 in Shanghai


def candidate(page: Any, name: str) -> tuple[str, str]:
    row = page.locator("#dry-candidates tbody tr", has=page.get_by_text(name, exact=True))
    cells = row.locator("td")
    return cells.nth(1).inner_text().strip(), cells.nth(2).inner_text().strip()


def test_a_manager_creates_a_rule_and_the_dry_run_names_who_gets_the_lead(api: Api, team, consoles: Consoles):
    api.ctx.clock.set(MONDAY_MORNING)
    manager = consoles.new(api.url)
    page = manager.sign_in(team.manager.token, "/console/routing")
    manager.ready()
    assert page.get_by_role("link", name="分配规则").get_attribute("aria-current") == "page"
    page.get_by_text("还没有分配规则").wait_for()

    # A round robin over team A's salespeople, for leads from 抖音.
    page.get_by_text("新建规则", exact=True).click()
    form = page.locator("#rule-form")
    form.get_by_label("规则名称").fill("抖音线索轮流")
    form.get_by_label("来源（逗号分隔，空 = 任意）").fill("抖音广告，快手")
    form.get_by_label("分配方式").select_option("round_robin")
    page.get_by_role("button", name="创建规则").click()
    page.get_by_role("status").filter(has_text="分配规则已创建：抖音线索轮流").wait_for()
    row = page.locator("#rules tbody tr").first
    assert "来源：抖音广告、快手" in row.inner_text() and "轮流分配：A 组全部销售" in row.inner_text()

    # Who would get a lead from 抖音 now? Alice, first in turn.
    dry = page.locator("#dry-form")
    dry.get_by_label("来源").fill("抖音广告")
    dry.get_by_role("button", name="试算").click()
    page.locator("#dry-summary").filter(has_text="李丽 会收到这条线索").wait_for()
    assert candidate(page, "李丽") == ("会收到", "—")
    assert candidate(page, "赵强") == ("可接收（未轮到）", "—")

    # Alice goes on leave (entered on this page): the answer becomes Bob, and says why Alice was passed over.
    avail = page.locator("#avail-form")
    avail.get_by_label("人员").select_option(label="李丽（销售 · A 组）")
    page.locator("#a-now").filter(has_text="李丽 现在可以接收分配").wait_for()
    avail.get_by_label("休假开始").fill("2026-03-01T09:00")
    avail.get_by_label("休假结束").fill("2026-03-06T18:00")
    page.get_by_role("button", name="保存工作时间").click()
    page.locator("#a-now").filter(has_text="李丽 现在不接收分配：正在休假").wait_for()
    dry.get_by_role("button", name="试算").click()
    page.locator("#dry-summary").filter(has_text="赵强 会收到这条线索").wait_for()
    manager.screenshot("routing")
    assert candidate(page, "李丽") == ("跳过", "正在休假")

    # Bob works weekday mornings only (a shorter day set on this page); it is 09:05 on Monday, so he still gets it.
    avail.get_by_label("人员").select_option(label="赵强（销售 · A 组）")
    page.locator("#a-now").filter(has_text="赵强 现在可以接收分配").wait_for()
    page.get_by_label("随时可接收（不限工作时间）").uncheck()
    page.get_by_label("周一").fill("09:00-12:00")
    page.get_by_role("button", name="保存工作时间").click()
    page.get_by_role("status").filter(has_text="工作时间已保存：赵强").wait_for()
    assert ok(api.client(team.bob).get(f"/api/users/{team.bob.id}/availability"))["workingHours"] == {
        "1": [["09:00", "12:00"]]
    }

    # And the real thing: a lead from 抖音 goes to Bob, who is told.
    got = api.lead(team.manager, source="抖音广告")
    assert got["ownerId"] == team.bob.id

    # Switched off, the rule routes nothing.
    page.get_by_role("button", name="停用规则：抖音线索轮流").click()
    page.get_by_role("status").filter(has_text="分配规则已更新：抖音线索轮流").wait_for()
    assert api.lead(team.manager, source="抖音广告")["ownerId"] is None


def test_a_salesperson_sets_their_own_working_hours_on_their_account_page(api: Api, team, consoles: Consoles):
    api.ctx.clock.set(MONDAY_MORNING)
    ok(
        api.client(team.manager).post(
            "/api/distribution-rules", json={"name": "轮流", "team": "A", "action": "round_robin"}
        ),
        201,
    )
    alice = consoles.new(api.url)
    page = alice.sign_in(team.alice.token, "/console/account")
    alice.ready()
    page.locator("#a-now").filter(has_text="李丽 现在可以接收分配").wait_for()

    # Afternoons only, Monday to Friday: at 09:05 on Monday she is not at work yet.
    page.get_by_label("随时可接收（不限工作时间）").uncheck()
    for day in ("周一", "周二", "周三", "周四", "周五"):
        page.get_by_label(day, exact=True).fill("13:00-18:00")
    page.get_by_role("button", name="保存工作时间").click()
    page.locator("#a-now").filter(has_text="李丽 现在不接收分配：不在工作时间").wait_for()
    page.locator("#avail-status").filter(has_text="工作时间已保存：李丽").wait_for()

    assert api.lead(team.manager)["ownerId"] == team.bob.id  # alice is skipped
    page.reload()
    alice.ready()
    assert page.get_by_label("周三", exact=True).input_value() == "13:00-18:00"


def test_an_admin_edits_a_rule_into_a_weighted_one_and_moves_it_first(api: Api, team, consoles: Consoles):
    admin_api = api.client(team.admin)
    ok(
        admin_api.post(
            "/api/distribution-rules", json={"name": "全部给孙娜", "action": "user", "targetUserId": team.carol.id}
        ),
        201,
    )
    ok(admin_api.post("/api/distribution-rules", json={"name": "A 组", "team": "A", "action": "round_robin"}), 201)
    admin = consoles.new(api.url)
    page = admin.sign_in(team.admin.token, "/console/routing")
    admin.ready()
    names = page.locator("#rules tbody tr td:nth-child(2)")
    assert names.all_inner_texts() == ["全部给孙娜", "A 组"]

    page.get_by_role("button", name="编辑规则：A 组").click()
    form = page.locator("#rule-form")
    form.get_by_label("分配方式").select_option("weighted")
    form.get_by_label("李丽（A 组）").check()
    form.locator(f"#r-member-{team.alice.id}-weight").fill("3")
    form.get_by_label("赵强（A 组）").check()
    page.get_by_role("button", name="保存修改").click()
    page.get_by_role("status").filter(has_text="分配规则已更新：A 组").wait_for()
    assert "按权重轮流：李丽×3、赵强×1" in page.locator("#rules tbody tr").nth(1).inner_text()

    page.get_by_role("button", name="上移规则：A 组").click()
    page.get_by_role("status").filter(has_text="规则顺序已更新：A 组").wait_for()
    page.wait_for_function("() => document.querySelector('#rules tbody tr td:nth-child(2)').textContent === 'A 组'")
    assert names.all_inner_texts() == ["A 组", "全部给孙娜"]
    owners = [api.lead(team.manager, phone=f"1390000010{i}")["ownerId"] for i in range(4)]
    assert owners == [team.alice.id, team.bob.id, team.alice.id, team.alice.id]


def test_a_rule_puts_leads_into_a_team_pool_chosen_by_name(api: Api, team, consoles: Consoles):
    pool = ok(api.client(team.admin).post("/api/pools", json={"name": "A组线索池", "team": "A"}), 201)
    manager = consoles.new(api.url)
    page = manager.sign_in(team.manager.token, "/console/routing")
    manager.ready()
    page.get_by_text("新建规则", exact=True).click()
    form = page.locator("#rule-form")
    form.get_by_label("规则名称").fill("先进本组线索池")
    form.get_by_label("分配方式").select_option("pool")
    pools = form.get_by_label("放入线索池")
    pools.locator("option", has_text="A组线索池").wait_for(state="attached")
    assert pools.locator("option").all_inner_texts() == ["全公司公海", "A组线索池"]
    pools.select_option(label="A组线索池")
    page.get_by_role("button", name="创建规则").click()
    page.get_by_role("status").filter(has_text="分配规则已创建：先进本组线索池").wait_for()
    assert "放入线索池：A组线索池" in page.locator("#rules tbody tr").first.inner_text()

    lead = api.lead(team.manager, name="周八")
    assert (lead["ownerId"], lead["poolId"]) == (None, pool["id"])

    # Editing the rule shows the pool it puts leads into.
    page.get_by_role("button", name="编辑规则：先进本组线索池").click()
    assert form.get_by_label("放入线索池").input_value() == str(pool["id"])
