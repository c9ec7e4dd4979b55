"""The console's rule form previews a rule before saving it: one that would move leads at once asks first,
in the page — 立即生效, a grace period, or 取消."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from support import NO_SCHEDULER, Api, ok, wait_for
from support.browser import Consoles  # the `consoles` fixture: a plugin (conftest)

# Without the scheduler role: nothing moves unless the test runs the transfer, so what the page says is
# what saving would do.
SQLITE_WITHOUT_SCHEDULER = pytest.mark.parametrize("stack", [f"sqlite/{NO_SCHEDULER}"], indirect=True)
MONDAY_MORNING = datetime(2026, 3, 2, 1, 5, tzinfo=UTC)  # 09:05 in Shanghai


def fill_rule(page, name: str, hours: str) -> None:
    page.get_by_label("规则名称").fill(name)
    page.get_by_label("条件").select_option("no_follow_up_after_assign")
    page.get_by_label("时限", exact=True).fill(hours)
    page.get_by_label("动作").select_option("public_pool")


def lead_due(api: Api, who, lead_id: int) -> datetime | None:
    due = ok(api.client(who).get(f"/api/customers/{lead_id}"))["transferDueAt"]
    return datetime.fromisoformat(due) if due else None


@SQLITE_WITHOUT_SCHEDULER
def test_saving_a_rule_that_would_move_leads_at_once_asks_first_and_a_grace_period_holds_them(
    api: Api, team, consoles: Consoles
):
    api.ctx.clock.set(MONDAY_MORNING)
    leads = []
    for i, name in enumerate(["林峰", "何静"]):
        lead = api.lead(team.manager, name=name, phone=f"1330000000{i}")
        ok(api.client(team.manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": team.alice.id}))
        leads.append(lead)
    api.ctx.clock.advance(hours=2)
    now = api.ctx.clock.now()

    admin = consoles.new(api.url)
    page = admin.sign_in(team.admin.token, "/console/transfer")
    admin.ready()
    page.get_by_text("新建规则").click()
    fill_rule(page, "一小时未跟进退回公海", "1")
    page.get_by_role("button", name="创建规则").click()
    dialog = page.get_by_role("alertdialog")
    dialog.get_by_text("保存后将立即流转 2 条线索").wait_for()
    admin.screenshot("transfer-preview")
    assert "A 组 2 条" in dialog.inner_text() and "林峰（李丽）→ 公海" in dialog.inner_text()
    assert ok(api.client(team.admin).get("/api/auto-transfer/rules")) == []  # nothing saved yet

    # 取消: nothing is saved.
    dialog.get_by_role("button", name="取消").click()
    page.get_by_role("status").filter(has_text="已取消，规则未保存").wait_for()
    assert dialog.is_hidden() and ok(api.client(team.admin).get("/api/auto-transfer/rules")) == []

    # A grace period of 6 hours: saved, and the leads go at its end instead of now.
    page.get_by_role("button", name="创建规则").click()
    dialog.get_by_text("保存后将立即流转 2 条线索").wait_for()
    dialog.get_by_label("宽限小时数").fill("6")
    dialog.get_by_role("button", name="宽限 6 小时").click()
    page.get_by_role("status").filter(has_text="流转规则已创建").wait_for()
    assert "宽限至 2026/03/02 17:05" in page.locator("#page-status").inner_text()
    [rule] = ok(api.client(team.admin).get("/api/auto-transfer/rules"))
    assert datetime.fromisoformat(rule["graceUntil"]) == now + timedelta(hours=6)
    wait_for(lambda: all(lead_due(api, team.admin, x["id"]) == now + timedelta(hours=6) for x in leads))
    assert ok(api.client(team.admin).post("/api/auto-transfer/run", json={}))["moved"] == 0

    # Switched off and on again: nothing would move at once now (the grace holds), so no question is asked.
    row = page.locator("#rules tbody tr", has_text="一小时未跟进退回公海")
    row.get_by_role("button", name="停用规则：一小时未跟进退回公海").click()
    row.get_by_role("button", name="启用规则：一小时未跟进退回公海").click()
    row.get_by_role("button", name="停用规则：一小时未跟进退回公海").wait_for()
    assert dialog.is_hidden()

    # 立即生效: a tighter rule takes the leads at the next run.
    page.get_by_text("新建规则").click()
    fill_rule(page, "半小时未跟进退回公海", "0.5")
    page.get_by_role("button", name="创建规则").click()
    dialog.get_by_text("保存后将立即流转 2 条线索").wait_for()
    dialog.get_by_role("button", name="立即生效").click()
    page.get_by_role("status").filter(has_text="流转规则已创建").wait_for()
    wait_for(lambda: all((lead_due(api, team.admin, x["id"]) or now) < now for x in leads))
    assert ok(api.client(team.admin).post("/api/auto-transfer/run", json={}))["moved"] == 2
    assert admin.problems == [] and admin.dialogs == []
