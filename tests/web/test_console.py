"""The web console in a real browser (Debian's chromium): managers assign, salespeople hear it live.

Each test is a short story of people at their own browsers (separate contexts) against a real server.
The console is a view over the JSON API that other suites test on both databases, so these run on
SQLite only to stay quick. The tests also save the screenshots in docs/screenshots/.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from playwright.sync_api import expect
from support import NO_SCHEDULER, Api, start_stack
from support.browser import PHONE, Consoles  # the `browser` and `consoles` fixtures: a plugin (conftest)
from support.receiver import WebhookReceiver

SQLITE_ONLY = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
# Without the scheduler role: a transfer run happens only when the page asks for one.
SQLITE_WITHOUT_SCHEDULER = pytest.mark.parametrize("stack", [f"sqlite/{NO_SCHEDULER}"], indirect=True)
# A fixed clock keeps the times on the pages, and so the screenshots, the same from run to run.
MONDAY_MORNING = datetime(2026, 3, 2, 1, 5, tzinfo=UTC)  # 09:05 in Shanghai
XSS = "<script>alert(1)</script>"


@pytest.fixture
def crm(api: Api) -> Api:
    """The running service with its clock at a fixed Monday morning (request before `team`)."""
    api.ctx.clock.set(MONDAY_MORNING)
    return api


def assign(api: Api, who, lead_id: int, to) -> dict:
    r = api.client(who).patch(f"/api/customers/{lead_id}/assign", json={"assignedTo": to.id})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def toasts(page) -> list[str]:
    return page.locator("#toasts .toast .title").all_inner_texts()


def no_horizontal_overflow(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"page is {width}px wide at {page.viewport_size['width']}px"


def tab_to(page, selector: str, *, backwards: bool = False, limit: int = 60) -> None:
    """Press Tab (or Shift+Tab) until the focused element matches `selector`."""
    for _ in range(limit):
        if page.evaluate("s => document.activeElement && document.activeElement.matches(s)", selector):
            return
        page.keyboard.press("Shift+Tab" if backwards else "Tab")
    raise AssertionError(f"could not reach {selector} with the keyboard")


@SQLITE_ONLY
def test_sign_in_with_a_bad_token_shows_an_error_and_sign_out_forgets_the_token(crm, team, consoles: Consoles):
    me = consoles.new(crm.url)
    page = me.open("/")
    page.wait_for_url("**/console/login**")  # / → /console → sign-in, since no token is stored
    me.screenshot("sign-in")

    page.get_by_label("API 令牌").fill("lp_not-a-real-token")
    page.get_by_label("API 令牌").press("Enter")
    error = page.locator("#token-error")
    error.wait_for()
    assert "令牌无效" in error.inner_text()
    assert "/console/login" in page.url

    me.sign_in(team.manager.token)
    page.wait_for_url("**/console/customers")
    page.locator("#me-name", has_text="王经理").wait_for()

    page.get_by_role("button", name="退出登录").click()
    page.wait_for_url("**/console/login?signedOut=1")
    assert "您已退出登录" in page.locator("#login-info").inner_text()
    assert page.evaluate("localStorage.getItem('leadpush.console.token')") is None
    me.open("/console/customers")
    page.wait_for_url("**/console/login?next=%2Fconsole%2Fcustomers")


@SQLITE_ONLY
def test_signing_out_while_the_live_inbox_is_starting_leaves_no_live_client(crm, team, consoles: Consoles):
    me = consoles.new(crm.url)
    page = me.page
    held: dict[str, Any] = {}

    def hold(name: str) -> Any:
        def handler(route: Any) -> None:
            if name in held:
                route.continue_()  # only the first request waits
            else:
                held[name] = route  # answered later by the test

        return handler

    def wait_held(name: str) -> Any:
        deadline = time.monotonic() + 30
        while name not in held:
            assert time.monotonic() < deadline, f"{name} was never requested"
            page.wait_for_timeout(20)  # lets Playwright run the route handler
        return held[name]

    # The live inbox's client module and the signed-out page answer only when the test says so.
    page.route("**/console/static/leadpush-client.mjs", hold("client"))
    page.route("**/console/login?signedOut=1", hold("signed-out"))
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    me.sign_in(team.manager.token, "/console/customers")
    page.locator("#me-name", has_text="王经理").wait_for()
    client_module = wait_held("client")  # the live inbox is starting: waiting for its client

    page.get_by_role("button", name="退出登录").click(no_wait_after=True)
    signed_out_page = wait_held("signed-out")  # sign-out has forgotten the token and is leaving the page
    # The live inbox's start goes on once its module arrives, and says how it ended on the console.
    with page.expect_console_message(lambda m: m.text.startswith("live inbox")) as said:
        client_module.continue_()
    assert said.value.type != "error", said.value.text
    assert sockets == [] and me.problems == []  # no live client was made (and none failed without a token)

    signed_out_page.continue_()
    page.wait_for_url("**/console/login?signedOut=1")
    assert "您已退出登录" in page.locator("#login-info").inner_text()
    assert page.evaluate("localStorage.getItem('leadpush.console.token')") is None
    assert sockets == []


@SQLITE_ONLY
def test_an_assignment_shows_on_the_salespersons_page_live_without_a_reload(crm, team, consoles: Consoles):
    lead = crm.lead(team.manager, name="周杰", phone="13900001111", source="官网表单", note="想了解企业版报价")
    alice = consoles.new(crm.url)
    inbox = alice.sign_in(team.alice.token, "/console/inbox")
    alice.ready()
    alice.live()
    inbox.evaluate("window.__sameDocument = true")
    assert inbox.locator("#unread-badge").is_hidden()

    manager = consoles.new(crm.url)
    page = manager.sign_in(team.manager.token, f"/console/customers/{lead['id']}")
    manager.ready()
    page.get_by_label("分配给").select_option(str(team.alice.id))
    page.get_by_role("button", name="分配", exact=True).click()
    page.get_by_role("status").filter(has_text="分配成功").wait_for()

    # Pushed over the open socket (how fast is a benchmark's question: docs/benchmarks.md, assign → WebSocket).
    toast = inbox.locator("#toasts .toast").filter(has_text="您有一条新线索：周杰")
    toast.wait_for()
    assert inbox.locator("#live-state").get_attribute("data-state") == "open"
    assert inbox.locator("#unread-badge").inner_text() == "1"
    assert inbox.locator("#inbox li").first.locator(".title").inner_text() == "您有一条新线索：周杰"
    assert inbox.evaluate("window.__sameDocument") is True  # no reload happened

    # The lead's page shows what happened: the new owner and the history row.
    page.locator("#history tbody tr").filter(has_text="网页分配").wait_for()
    assert "李丽" in page.locator("#info").inner_text()
    r = crm.client(team.alice).post(
        f"/api/customers/{lead['id']}/follow-ups", json={"content": "已电话联系，周三上门演示", "status": "following"}
    )
    assert r.status_code == 201, r.text
    page.reload()
    manager.ready()
    page.locator("#follow-ups li", has_text="周三上门演示").wait_for()
    manager.screenshot("lead-detail")

    # Reading it clears the badge.
    inbox.get_by_role("button", name="标为已读：您有一条新线索：周杰").click()
    inbox.locator("#unread-badge").wait_for(state="hidden")


@SQLITE_ONLY
def test_a_batch_assignment_from_the_pool_shows_one_digest_not_one_toast_per_lead(crm, team, consoles: Consoles):
    for i, (name, source) in enumerate([("吴敏", "抖音广告"), ("郑浩", "展会"), ("冯雪", "转介绍")]):
        crm.lead(team.manager, name=name, phone=f"1370000000{i}", source=source)
    bob = consoles.new(crm.url)
    inbox = bob.sign_in(team.bob.token, "/console/inbox")
    bob.ready()
    bob.live()

    manager = consoles.new(crm.url)
    page = manager.sign_in(team.manager.token, "/console/pool")
    manager.ready()
    assert page.locator("#leads tbody tr").count() == 3
    manager.screenshot("pool")
    page.get_by_label("选择本页全部线索").check()
    page.get_by_label("分配给").select_option(str(team.bob.id))
    page.get_by_role("button", name="分配所选").click()
    page.get_by_role("status").filter(has_text="已分配 3 条").wait_for()

    inbox.locator("#toasts .toast").first.wait_for()
    time.sleep(0.5)  # anything more would have arrived by now (a check that nothing more comes)
    assert toasts(inbox) == ["您有 3 条新线索"]
    assert inbox.locator("#unread-badge").inner_text() == "1"
    digest = inbox.locator("#inbox li").first
    assert digest.locator(".leads li").count() == 3
    assert page.locator("#leads tbody tr.empty-row").count() == 1  # the pool is empty now


@SQLITE_ONLY
def test_a_customer_named_like_a_script_renders_as_text_everywhere(crm, team, consoles: Consoles):
    lead = crm.lead(
        team.manager, name=XSS, phone="13800000000", source="<b>来源</b>", note="<img src=x onerror=alert(2)>"
    )
    alice = consoles.new(crm.url)
    inbox = alice.sign_in(team.alice.token, "/console/inbox")
    alice.ready()
    alice.live()

    manager = consoles.new(crm.url)
    page = manager.sign_in(team.manager.token, "/console/customers")
    manager.ready()
    row = page.locator("#leads tbody tr", has_text=XSS)
    assert row.locator("a").inner_text() == XSS
    assert row.locator("td").nth(3).inner_text() == "<b>来源</b>"
    assert page.locator("#leads script, #leads b").count() == 0
    row.get_by_role("checkbox").check()
    page.get_by_label("分配给").select_option(str(team.alice.id))
    page.get_by_role("button", name="分配所选").click()
    page.get_by_role("status").filter(has_text="分配成功").wait_for()

    toast = inbox.locator("#toasts .toast").first
    toast.wait_for(timeout=1000)
    assert toast.locator(".title").inner_text() == f"您有一条新线索：{XSS}"
    assert inbox.locator("#inbox li .title").first.inner_text() == f"您有一条新线索：{XSS}"

    detail = alice.open(f"/console/customers/{lead['id']}")
    alice.ready()
    assert detail.locator("h1").inner_text() == XSS
    assert "<img src=x onerror=alert(2)>" in detail.locator("#info").inner_text()
    assert detail.locator("main script, main img").count() == 0
    assert detail.title().startswith(XSS)
    # consoles.check() at teardown fails the test if any alert() dialog fired.


@SQLITE_ONLY
def test_keyboard_only_a_manager_filters_selects_and_assigns(crm, team, consoles: Consoles):
    crm.lead(team.manager, name="钱多多", phone="13600000001", source="官网表单")
    for i, name in enumerate(["孙悦", "李娜", "王磊"]):
        lead = crm.lead(team.manager, name=name, phone=f"1350000000{i}", source="抖音广告")
        assign(crm, team.manager, lead["id"], team.bob if i else team.alice)
    manager = consoles.new(crm.url)
    page = manager.sign_in(team.manager.token, "/console/customers")
    manager.ready()
    manager.screenshot("leads")

    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "跳到主要内容"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # focus is visible
    page.keyboard.press("Enter")
    tab_to(page, "#f-keyword")
    page.keyboard.type("钱多多")
    page.keyboard.press("Enter")  # the filter form submits with Enter
    page.locator("#leads tbody tr").filter(has_text="王磊").wait_for(state="detached")
    assert page.locator("#leads tbody tr").count() == 1
    assert "keyword=" in page.url

    tab_to(page, "#leads tbody input[type=checkbox]")
    page.keyboard.press("Space")
    tab_to(page, "#assign-to", backwards=True)
    for _ in range(10):
        if page.evaluate("document.activeElement.value") == str(team.alice.id):
            break
        page.keyboard.press("ArrowDown")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "assign-submit"
    page.keyboard.press("Enter")
    page.get_by_role("status").filter(has_text="分配成功").wait_for()
    page.locator("#leads tbody td.owner", has_text="李丽").wait_for()


@SQLITE_ONLY
def test_a_salesperson_on_a_phone_claims_follows_up_releases_and_sees_new_leads(crm, team, consoles: Consoles):
    lead = crm.lead(team.manager, name="黄蓉", phone="13500001234", source="小程序")
    crm.lead(team.manager, name="郭靖", phone="13500005678", source="展会")
    alice = consoles.new(crm.url, viewport=PHONE)
    page = alice.sign_in(team.alice.token, "/console/pool")
    alice.ready()
    no_horizontal_overflow(page)
    page.get_by_role("button", name="领取线索：黄蓉").click()
    page.get_by_role("status").filter(has_text="领取成功：黄蓉").wait_for()

    alice.open("/console/customers")  # "my leads": only hers, not the pool
    alice.ready()
    assert page.locator("h1").inner_text() == "我的线索"
    expect(page.locator("#leads tbody tr")).to_have_count(1)
    assert "黄蓉" in page.locator("#leads tbody tr").inner_text()
    no_horizontal_overflow(page)
    page.get_by_role("link", name="黄蓉").click()
    page.wait_for_url(f"**/console/customers/{lead['id']}")
    alice.ready()
    no_horizontal_overflow(page)
    page.get_by_label("跟进内容").fill("电话沟通，约周三上门演示")
    page.get_by_label("更新状态").select_option("following")
    page.get_by_role("button", name="记录跟进").click()
    page.locator("#follow-ups li", has_text="约周三上门演示").wait_for()
    assert "跟进中" in page.locator("#info").inner_text()
    page.get_by_label("释放原因（可选）").fill("客户已选择其他供应商")
    page.get_by_label("释放原因（可选）").press("Enter")
    page.get_by_role("status").filter(has_text="已释放到公海").wait_for()
    page.locator("#history tbody tr", has_text="客户已选择其他供应商").wait_for()

    inbox = alice.open("/console/inbox")
    alice.ready()
    alice.live()
    badge = inbox.locator("#unread-badge")
    unread = int(badge.inner_text()) if badge.is_visible() else 0
    other = crm.lead(team.manager, name="杨过", phone="13500009999", source="抖音广告")
    assign(crm, team.manager, other["id"], team.alice)
    inbox.locator("#toasts .toast", has_text="您有一条新线索：杨过").wait_for(timeout=1000)
    assert badge.inner_text() == str(unread + 1)
    assert inbox.locator("#inbox li .title").first.inner_text() == "您有一条新线索：杨过"
    no_horizontal_overflow(inbox)
    alice.screenshot("inbox-phone")
    inbox.get_by_role("link", name="查看线索").first.click()
    inbox.wait_for_url(f"**/console/customers/{other['id']}")


@SQLITE_WITHOUT_SCHEDULER
def test_transfer_rules_and_a_dry_run_preview_before_running_for_real(crm, team, consoles: Consoles):
    admin = consoles.new(crm.url)
    page = admin.sign_in(team.admin.token, "/console/transfer")
    admin.ready()
    page.get_by_text("新建规则").click()
    page.get_by_label("规则名称").fill("15分钟未跟进退回公海")
    page.get_by_label("条件").select_option("no_follow_up_after_assign")
    page.get_by_label("时限", exact=True).fill("0.25")
    page.get_by_label("动作").select_option("public_pool")
    page.get_by_role("button", name="创建规则").click()
    page.get_by_role("status").filter(has_text="流转规则已创建").wait_for()
    rule = page.locator("#rules tbody tr", has_text="15分钟未跟进退回公海")
    rule.get_by_role("button", name="停用规则：15分钟未跟进退回公海").click()
    rule.locator("td", has_text="停用").first.wait_for()
    rule.get_by_role("button", name="启用规则：15分钟未跟进退回公海").click()
    rule.get_by_role("button", name="停用规则：15分钟未跟进退回公海").wait_for()

    names = ["林峰", "何静"]
    leads = [crm.lead(team.manager, name=n, phone=f"1330000000{i}") for i, n in enumerate(names)]
    for lead in leads:
        assign(crm, team.manager, lead["id"], team.alice)
    crm.ctx.clock.advance(minutes=20)  # past the deadline

    page.get_by_role("button", name="预览（不执行）").click()
    page.locator("#preview-summary", has_text="演练：将流转 2 条").wait_for()
    assert page.locator("#preview-table tbody tr").count() == 2
    assert page.locator("#preview-table tbody tr", has_text="林峰").locator("td").nth(2).inner_text() == "公海"
    owners = {crm.client(team.admin).get(f"/api/customers/{x['id']}").json()["data"]["ownerId"] for x in leads}
    assert owners == {team.alice.id}  # a preview moves nothing
    admin.screenshot("transfer")

    page.get_by_role("button", name="确认执行").click()
    page.locator("#preview-summary", has_text="已流转 2 条").wait_for()
    page.locator("#runs tbody tr").nth(1).wait_for()
    history = page.locator("#runs tbody tr").all_inner_texts()
    assert "手动" in history[0] and "预览" not in history[0] and "（预览）" in history[1]
    owners = {crm.client(team.admin).get(f"/api/customers/{x['id']}").json()["data"]["ownerId"] for x in leads}
    assert owners == {None}

    delete = rule.get_by_role("button", name="删除规则：15分钟未跟进退回公海")
    delete.click()
    delete.click()  # asks twice, in the page
    page.locator("#rules-empty").wait_for()


def test_a_dead_delivery_is_retried_from_the_monitor(tmp_path, consoles: Consoles):
    """A webhook that refuses (HTTP 400, permanent) makes a dead delivery; once fixed, an admin retries it."""
    with WebhookReceiver() as receiver:
        receiver.always = 400
        ctx, server = start_stack(
            f"sqlite:///{tmp_path}/console.db",
            webhook_url=receiver.url,
            webhook_secret="whsec-console-test",
            delivery_max_attempts=1,
        )
        crm = Api(url=server.url, ctx=ctx)
        try:
            ctx.clock.set(MONDAY_MORNING)
            admin = crm.user("管理员", "admin", None)
            manager = crm.user("王经理", "manager", "A")
            alice = crm.user("李丽", "sales", "A")
            lead = crm.lead(manager, name="赵敏", phone="13811112222", source="官网表单")
            assign(crm, manager, lead["id"], alice)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                r = crm.client(admin).get("/api/deliveries", params={"status": "dead"})
                if r.json()["data"]["total"]:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the webhook delivery did not die")

            me = consoles.new(crm.url)
            page = me.sign_in(admin.token, "/console/deliveries")
            me.ready()
            counters = page.locator("#counters tbody tr[data-channel='webhook']")
            assert counters.locator("td[data-status='dead']").inner_text() == "1"
            page.get_by_label("状态", exact=True).select_option("dead")
            page.get_by_role("button", name="筛选").click()
            expect(page.locator("#deliveries tbody tr")).to_have_count(1)
            row = page.locator("#deliveries tbody tr[data-status='dead']")
            assert "400" in row.locator(".error-cell").inner_text()
            me.screenshot("deliveries")

            receiver.always = None  # the other system is fixed
            row.get_by_role("button", name="重新发送").click()
            page.get_by_role("status").filter(has_text="已重新加入发送队列").wait_for()
            page.locator("#deliveries tbody tr[data-status='sent']").wait_for(timeout=10_000)
            counters.locator("td[data-status='sent']", has_text="1").wait_for(timeout=10_000)
            assert receiver.accepted() == 1

            # A manager sees the monitor but may not retry.
            boss = consoles.new(crm.url)
            view = boss.sign_in(manager.token, "/console/deliveries")
            boss.ready()
            assert view.locator("#retry-hint").is_visible()
            assert view.get_by_role("button", name="重新发送").count() == 0
        finally:
            crm.close()
            server.stop()
            ctx.db.dispose()


@SQLITE_ONLY
def test_the_inbox_catches_up_after_its_socket_drops_and_long_polls_while_websocket_is_blocked(
    crm, team, consoles: Consoles
):
    """The network between the browser and /ws breaks: nothing committed meanwhile is lost, and with the
    socket refused the page keeps hearing about new leads by long-polling."""
    sockets: list = []
    blocked = {"ws": False}

    def route(ws) -> None:
        if blocked["ws"]:
            ws.close(code=1006, reason="blocked by the test")
            return
        ws.connect_to_server()
        sockets.append(ws)

    alice = consoles.new(crm.url)
    alice.page.route_web_socket("**/ws*", route)
    inbox = alice.sign_in(team.alice.token, "/console/inbox")
    alice.ready()
    alice.live()
    inbox.evaluate("window.__sameDocument = true")

    blocked["ws"] = True
    for ws in sockets:
        ws.close(code=1006, reason="network dropped")  # the page's socket breaks
    missed = crm.lead(team.manager, name="韩梅", phone="13300001111", source="展会")
    assign(crm, team.manager, missed["id"], team.alice)  # committed while the page has no socket

    inbox.locator("#live-state[data-state='polling']").wait_for(timeout=15_000)
    inbox.locator("#toasts .toast", has_text="您有一条新线索：韩梅").wait_for()
    later = crm.lead(team.manager, name="李雷", phone="13300002222", source="展会")
    assign(crm, team.manager, later["id"], team.alice)
    inbox.locator("#toasts .toast", has_text="您有一条新线索：李雷").wait_for(timeout=1000)  # long poll answers at once
    assert inbox.locator("#unread-badge").inner_text() == "2"
    titles = inbox.locator("#inbox li .title").all_inner_texts()
    assert titles == ["您有一条新线索：李雷", "您有一条新线索：韩梅"]  # each once, newest first
    assert inbox.evaluate("window.__sameDocument") is True

    # The server notices a closed long poll only when it answers it: close the page, then give the
    # pending poll something to answer, so it does not hold the server's shutdown for 25 seconds.
    alice.context.close()
    assign(crm, team.manager, crm.lead(team.manager, name="收尾", phone="13300003333")["id"], team.alice)


@SQLITE_ONLY
def test_the_console_serves_the_shared_client_and_says_clearly_when_it_is_missing(api, monkeypatch, caplog, tmp_path):
    from leadpush.web import views

    http = api.client()
    r = http.get("/console/static/leadpush-client.mjs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert "export function createClient" in r.text

    monkeypatch.setattr(views, "CLIENT_MODULE", tmp_path / "missing.mjs")
    with caplog.at_level("ERROR", logger="leadpush.web.views"):
        r = http.get("/console/static/leadpush-client.mjs")
    assert r.status_code == 404 and "live inbox is unavailable" in r.text
    assert any("shared JS client is missing" in m for m in caplog.messages)

    for bad in ("/console/static/..%2Fviews.py", "/console/static/.env", "/console/static/nope.js"):
        assert http.get(bad).status_code == 404, bad
    page = http.get("/console/customers")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<html lang="zh-CN">' in page.text


# In the page: one refused request (1001 ids; the server takes 1000) through the console's own API wrapper
# and through the client kit the live inbox runs, each error as {status, code, message, data}.
BOTH_WRAPPERS = """async () => {
  const { api } = await import('/console/static/common.js');
  const kit = await import('/console/static/leadpush-client.mjs');
  const client = kit.createClient({ token: localStorage.getItem('leadpush.console.token'),
    transport: kit.browserTransport({ WebSocket: null }) });
  const ids = Array.from({ length: 1001 }, (_, i) => i + 1);
  const seen = (e) => ({ status: e.status, code: e.code, message: e.message, data: e.data });
  return {
    console: await api('/api/notifications/read', { method: 'POST', body: { ids } }).then(() => null, seen),
    kit: await client.markRead(ids).then(() => null, seen),
  };
}"""


@SQLITE_ONLY
def test_the_console_and_the_client_kit_report_a_refused_request_the_same_way(crm, team, consoles: Consoles):
    alice = consoles.new(crm.url)
    alice.sign_in(team.alice.token, "/console/inbox")
    page = alice.ready()
    errors = page.evaluate(BOTH_WRAPPERS)
    assert errors["console"] is not None and errors["kit"] == errors["console"]
    assert errors["kit"]["status"] == 422 and errors["kit"]["code"] == "validation_error"
    assert errors["kit"]["message"].startswith("参数错误：ids")
