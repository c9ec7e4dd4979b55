"""The console as the people of issue 14 met it, mostly on a phone: each story failed before its fix.

A salesperson at 375 px claims from the pool without scrolling sideways and hears nothing about the lead
they just took; the notice "线索收回" opens a page that says how the lead left them (and shows nothing of
it); a manager reads rules and runs by name, fills a rule form that does not pretend, and reads the
message monitor in plain words. SQLite only, like the other browser tests (the API suites cover both
databases).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from support import NO_SCHEDULER, Api, start_stack
from support.browser import PHONE, Consoles  # the `browser` and `consoles` fixtures: a plugin (conftest)
from support.receiver import WebhookReceiver
from support.waiting import wait_for

SQLITE_ONLY = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
# Without the scheduler role: a transfer run happens only when the test asks for one.
SQLITE_WITHOUT_SCHEDULER = pytest.mark.parametrize("stack", [f"sqlite/{NO_SCHEDULER}"], indirect=True)
MONDAY_MORNING = datetime(2026, 3, 2, 1, 5, tzinfo=UTC)  # 09:05 in Shanghai
WIDTH = PHONE["width"]
# Words of the delivery machinery a sales manager should not have to learn.
JARGON = re.compile(r"投递|死信|webhook|dead letter", re.IGNORECASE)
# Every notification the page's live inbox hands on, kept for the test to wait for.
ON_SCREEN = """() => [...document.querySelectorAll('#leads tbody button')].map((button) => {
  window.scrollTo(0, button.getBoundingClientRect().top + window.scrollY - 200);
  const r = button.getBoundingClientRect();
  const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  return { label: button.getAttribute('aria-label'), left: r.left, right: r.right,
           hit: hit && hit.closest('button') ? hit.closest('button').getAttribute('aria-label') : null };
})"""
RECORD_NOTIFICATIONS = """() => {
  window.__notifications = [];
  window.addEventListener('leadpush:notification', (e) => window.__notifications.push(e.detail.title));
}"""


@pytest.fixture
def crm(api: Api) -> Api:
    """The running service with its clock at a fixed Monday morning (request before `team`)."""
    api.ctx.clock.set(MONDAY_MORNING)
    return api


def ok(r) -> dict:
    assert r.is_success, r.text
    return r.json()["data"]


def assign(api: Api, who, lead_id: int, to) -> dict:
    return ok(api.client(who).patch(f"/api/customers/{lead_id}/assign", json={"assignedTo": to.id}))


def toasts(page) -> list[str]:
    return page.locator("#toasts .toast .title").all_inner_texts()


def wait_for_notification(page, title: str) -> None:
    """Wait until the page's live inbox has received the notification titled `title`."""
    page.wait_for_function("t => (window.__notifications || []).includes(t)", arg=title)


@SQLITE_ONLY
def test_at_375px_every_pool_rows_claim_button_is_on_screen_without_scrolling_sideways(crm, team, consoles: Consoles):
    names = ["黄蓉", "欧阳克·来自西域白驼山庄的长名字客户有限公司采购部", "郭靖"]
    for i, name in enumerate(names):
        crm.lead(team.manager, name=name, phone=f"1350000{i:04d}", source="官网表单")
    alice = consoles.new(crm.url, viewport=PHONE)
    page = alice.sign_in(team.alice.token, "/console/pool")
    alice.ready()

    buttons = page.get_by_role("button", name=re.compile("^领取线索："))
    assert buttons.count() == 3
    # Each button, brought into view by scrolling the page down only: inside the screen's width, and the
    # point at its centre is the button itself (nothing covers it).
    seen = page.evaluate(ON_SCREEN)
    assert len(seen) == 3
    for b in seen:
        assert b["left"] >= 0 and b["right"] <= WIDTH, f"{b['label']} spans x={b['left']:.0f}..{b['right']:.0f}"
        assert b["hit"] == b["label"], b
    assert page.evaluate("document.scrollingElement.scrollWidth") <= WIDTH
    assert page.evaluate("document.querySelector('.table-wrap').scrollLeft") == 0
    alice.screenshot("pool-phone")

    page.get_by_role("button", name="领取线索：郭靖").click()
    page.get_by_role("status").filter(has_text="领取成功：郭靖").wait_for()
    assert page.evaluate("document.scrollingElement.scrollWidth") <= WIDTH


@SQLITE_ONLY
def test_claiming_a_lead_or_assigning_one_to_yourself_pops_no_toast_and_leaves_nothing_unread(
    crm, team, consoles: Consoles
):
    crm.lead(team.manager, name="黄蓉", phone="13500001234", source="小程序")
    alice = consoles.new(crm.url, viewport=PHONE)
    page = alice.sign_in(team.alice.token, "/console/pool")
    alice.ready()
    alice.live()
    page.evaluate(RECORD_NOTIFICATIONS)
    page.get_by_role("button", name="领取线索：黄蓉").click()
    page.get_by_role("status").filter(has_text="领取成功：黄蓉").wait_for()
    wait_for_notification(page, "您有一条新线索：黄蓉")  # the notice reached the page…
    assert toasts(page) == []  # …and popped nothing up
    assert page.locator("#unread-badge").is_hidden()

    inbox = alice.open("/console/inbox")
    alice.ready()
    entry = inbox.locator("#inbox li", has_text="您有一条新线索：黄蓉")
    assert "您从公海领取了线索「黄蓉」" in entry.inner_text()  # still in the list, as something already read
    assert "unread" not in (entry.get_attribute("class") or "")
    assert inbox.locator("#inbox-summary").inner_text() == "全部已读"

    # A manager taking a lead themselves is the same: no toast, nothing unread; anyone else's is news.
    lead = crm.lead(team.manager, name="郭靖", phone="13500005678", source="展会")
    boss = consoles.new(crm.url)
    detail = boss.sign_in(team.manager.token, f"/console/customers/{lead['id']}")
    boss.ready()
    boss.live()
    detail.evaluate(RECORD_NOTIFICATIONS)
    detail.get_by_label("分配给").select_option(str(team.manager.id))
    detail.get_by_role("button", name="分配", exact=True).click()
    detail.get_by_role("status").filter(has_text="分配成功").wait_for()
    wait_for_notification(detail, "您有一条新线索：郭靖")
    assert toasts(detail) == [] and detail.locator("#unread-badge").is_hidden()

    other = crm.lead(team.manager_b, name="杨过", phone="13500009999")
    assign(crm, team.admin, other["id"], team.manager)
    detail.locator("#toasts .toast", has_text="您有一条新线索：杨过").wait_for()
    assert detail.locator("#unread-badge").inner_text() == "1"


def rule_to(api: Api, who, target, name: str = "15分钟未跟进转交专人") -> dict:
    return ok(
        api.client(who).post(
            "/api/auto-transfer/rules",
            json={
                "name": name,
                "condition": "no_follow_up_after_assign",
                "thresholdHours": 0.25,
                "action": "user",
                "targetUserId": target.id,
            },
        )
    )


@SQLITE_WITHOUT_SCHEDULER
def test_a_lead_taken_back_by_a_rule_says_when_and_how_and_shows_nothing_of_it(crm, team, consoles: Consoles):
    rule = rule_to(crm, team.admin, team.bob)
    taken = crm.lead(team.manager, name="林峰", phone="13300000001", source="展会", note="预算 20 万")
    assign(crm, team.manager, taken["id"], team.alice)
    crm.ctx.clock.advance(minutes=20)  # past the rule's deadline
    ok(crm.client(team.admin).post("/api/auto-transfer/run", json={"dryRun": False}))

    # The API: the former owner learns how it left them, nothing of the lead as it is now.
    r = crm.client(team.alice).get(f"/api/customers/{taken['id']}")
    assert r.status_code == 404 and r.json()["code"] == "customer_recycled", r.text
    gone = r.json()["data"]
    assert gone["via"] == "auto_transfer" and gone["ruleName"] == rule["name"] and gone["toPool"] is False
    assert gone["takenBackAt"].startswith("2026-03-02T")
    assert not {"name", "phone", "note", "ownerId", "ownerName", "toUserId"} & set(gone)
    assert "13300000001" not in r.text and "赵强" not in r.text
    # Someone who never had it learns nothing, not even that it exists.
    r = crm.client(team.carol).get(f"/api/customers/{taken['id']}")
    assert r.status_code == 404 and r.json()["code"] == "customer_not_found" and r.json()["data"] is None

    alice = consoles.new(crm.url, viewport=PHONE)
    inbox = alice.sign_in(team.alice.token, "/console/inbox")
    alice.ready()
    notice = inbox.locator("#inbox li", has_text="线索「林峰」已被收回")
    notice.get_by_role("link", name="查看线索").click()
    inbox.wait_for_url(f"**/console/customers/{taken['id']}")
    alice.ready()
    page = inbox
    assert page.locator("h1").inner_text() == "线索已被收回"
    said = page.locator("#page-status").inner_text()
    assert "2026/03/02 09:25" in said and f"自动流转规则「{rule['name']}」" in said and "其他同事" in said, said
    assert page.locator(".detail-grid").is_hidden()  # no empty sections
    assert page.locator("main").inner_text().count("13300000001") == 0
    alice.screenshot("lead-taken-back-phone")

    # A manager's reassignment names the manager.
    other = crm.lead(team.manager, name="何静", phone="13300000002")
    assign(crm, team.manager, other["id"], team.alice)
    assign(crm, team.manager, other["id"], team.bob)
    alice.open(f"/console/customers/{other['id']}")
    alice.ready()
    assert "王经理" in page.locator("#page-status").inner_text()
    assert page.locator(".detail-grid").is_hidden()

    # A lead that never was hers: plainly not found, and no empty sections either.
    carol = consoles.new(crm.url, viewport=PHONE)
    stranger = carol.sign_in(team.carol.token, f"/console/customers/{taken['id']}")
    carol.ready()
    assert stranger.locator("h1").inner_text() == "线索不存在"
    assert stranger.locator(".detail-grid").is_hidden()
    assert "林峰" not in stranger.locator("main").inner_text()


@SQLITE_WITHOUT_SCHEDULER
def test_rules_and_runs_show_names_and_a_deleted_rule_says_so(crm, team, consoles: Consoles):
    rule = rule_to(crm, team.admin, team.bob)
    moved = crm.lead(team.manager, name="林峰", phone="13300000001")
    stuck = crm.lead(team.manager, name="何静", phone="13300000002")
    assign(crm, team.manager, moved["id"], team.alice)
    assign(crm, team.manager, stuck["id"], team.bob)
    assign(crm, team.manager, stuck["id"], team.alice)  # bob just lost it: the rule may not hand it back yet
    crm.ctx.clock.advance(minutes=20)

    admin = consoles.new(crm.url)
    page = admin.sign_in(team.admin.token, "/console/transfer")
    admin.ready()
    row = page.locator("#rules tbody tr", has_text=rule["name"])
    assert "转给指定人：赵强" in row.inner_text()
    assert "#" not in page.locator("#rules").inner_text()

    page.get_by_role("button", name="预览（不执行）").click()
    page.locator("#preview-summary", has_text="演练：将流转 1 条").wait_for()
    preview = page.locator("#preview-table tbody").inner_text()
    assert rule["name"] in preview and "#" not in preview
    page.get_by_role("button", name="确认执行").click()
    page.locator("#preview-summary", has_text="已流转 1 条").wait_for()
    latest = page.locator("#runs tbody tr").first
    latest.locator("text=何静").wait_for()  # the failure is listed with its lead and its rule, by name
    assert rule["name"] in latest.inner_text()
    admin.screenshot("transfer-names")

    ok(crm.client(team.admin).delete(f"/api/auto-transfer/rules/{rule['id']}"))
    page.reload()
    admin.ready()
    latest = page.locator("#runs tbody tr").first
    assert f"已删除的规则 #{rule['id']}" in latest.inner_text()


@SQLITE_ONLY
def test_the_rule_forms_team_is_a_real_choice_for_admins_and_plain_text_for_managers(crm, team, consoles: Consoles):
    boss = consoles.new(crm.url)
    page = boss.sign_in(team.manager.token, "/console/transfer")
    boss.ready()
    page.get_by_text("新建规则").click()
    form = page.locator("#rule-form")
    # Nothing that looks editable for the team: the manager's team, as text.
    assert form.locator("[name=team]:visible").count() == 0
    fixed = form.locator("#r-team-fixed")
    assert fixed.is_visible() and "A 组" in fixed.inner_text()
    assert fixed.evaluate("e => !e.matches('input, select, textarea') && !e.querySelector('input, select, textarea')")
    page.get_by_label("规则名称").fill("A组两天未跟进退回公海")
    page.get_by_label("条件").select_option("no_follow_up_after_assign")
    page.get_by_label("时限", exact=True).fill("48")
    page.get_by_label("动作").select_option("public_pool")
    page.get_by_role("button", name="创建规则").click()
    page.get_by_role("status").filter(has_text="流转规则已创建").wait_for()
    assert "A 组" in page.locator("#rules tbody tr", has_text="A组两天未跟进退回公海").inner_text()

    admin = consoles.new(crm.url)
    page = admin.sign_in(team.admin.token, "/console/transfer")
    admin.ready()
    page.get_by_text("新建规则").click()
    team_choice = page.get_by_label("适用团队")
    assert team_choice.evaluate("e => e.tagName") == "SELECT"
    assert team_choice.locator("option").all_inner_texts() == ["全公司", "A 组", "B 组"]
    team_choice.select_option("B")
    page.get_by_label("规则名称").fill("B组一天未跟进退回公海")
    page.get_by_label("条件").select_option("no_follow_up_after_assign")
    page.get_by_label("时限", exact=True).fill("24")
    page.get_by_label("动作").select_option("public_pool")
    page.get_by_role("button", name="创建规则").click()
    page.get_by_role("status").filter(has_text="流转规则已创建").wait_for()
    assert "B 组" in page.locator("#rules tbody tr", has_text="B组一天未跟进退回公海").inner_text()


def test_the_message_monitor_speaks_plainly(tmp_path, consoles: Consoles):
    """A dead webhook delivery, read by a sales manager: nav, title, filters, labels and help text in plain words."""
    with WebhookReceiver() as receiver:
        receiver.always = 400
        ctx, server = start_stack(
            f"sqlite:///{tmp_path}/plain.db",
            webhook_url=receiver.url,
            webhook_secret="whsec-plain-words",
            delivery_max_attempts=1,
        )
        crm = Api(url=server.url, ctx=ctx)
        try:
            ctx.clock.set(MONDAY_MORNING)
            admin = crm.user("管理员", "admin", None)
            manager = crm.user("王经理", "manager", "A")
            alice = crm.user("李丽", "sales", "A")
            lead = crm.lead(manager, name="赵敏", phone="13811112222")
            assign(crm, manager, lead["id"], alice)
            wait_for(lambda: ok(crm.client(admin).get("/api/deliveries", params={"status": "dead"}))["total"])

            me = consoles.new(crm.url)
            page = me.sign_in(manager.token, "/console/customers")
            me.ready()
            page.get_by_role("link", name="消息发送记录").click()
            page.wait_for_url("**/console/deliveries")
            me.ready()
            assert page.title().startswith("消息发送记录")
            page.get_by_label("状态", exact=True).select_option("dead")
            page.get_by_role("button", name="筛选").click()
            page.locator("#deliveries tbody tr").first.wait_for()
            options = page.locator("select option").all_inner_texts()
            assert "发送失败（已停止重试）" in options and "对接系统推送" in options
            seen = page.locator("body").inner_text() + "\n" + "\n".join(options)
            assert not JARGON.search(seen), JARGON.findall(seen)
            me.screenshot("deliveries-plain")
        finally:
            crm.close()
            server.stop()
            ctx.db.dispose()
