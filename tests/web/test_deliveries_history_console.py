"""The deliveries page (消息发送记录) in a real browser: a row opens its attempt history; held and merged rows
say why they wait and where they went; the status filter knows 已合并.

Like the other console tests, SQLite only (the API under the page is tested on both databases in
tests/notify/test_delivery_history.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from leadpush_fakes.wechat import SUBSCRIBE_PATH
from playwright.sync_api import expect
from sqlalchemy import select, update
from support import Api, start_stack, wait_for
from support.api import ok
from support.browser import Consoles  # the `browser` and `consoles` fixtures: a plugin (conftest)
from support.channels import TEMPLATE, FakeWeChatServer, channel_settings, strict_state

from leadpush.notify.models import Delivery
from leadpush.wechat.credits import add_credits

MONDAY_MORNING = datetime(2026, 3, 2, 1, 5, tzinfo=UTC)  # 09:05 in Shanghai
OPENID = "o-alice-console"
HOLD = "免打扰时段（22:00–08:00），08:00 发送"


@pytest.fixture
def crm(tmp_path) -> Iterator[tuple[Api, FakeWeChatServer]]:
    with FakeWeChatServer(strict_state()) as fake:
        ctx, server = start_stack(
            f"sqlite:///{tmp_path}/history-console.db", delivery_poll_interval=0.2, **channel_settings(fake.url)
        )
        api = Api(url=server.url, ctx=ctx)
        try:
            ctx.clock.set(MONDAY_MORNING)
            yield api, fake
        finally:
            api.close()
            server.stop()
            ctx.db.dispose()


def test_a_row_opens_its_attempt_history_and_held_and_merged_rows_say_why(crm, consoles: Consoles):
    api, fake = crm
    admin = api.user("管理员", "admin", None)
    manager = api.user("王经理", "manager", "A")
    alice = api.user("李丽", "sales", "A", wechat_openid=OPENID)
    bob = api.user("赵强", "sales", "A")
    with api.ctx.db.write() as s:
        add_credits(s, alice.id, [TEMPLATE], api.ctx.clock.now())
    fake.state.set_credits(OPENID, TEMPLATE, 1)
    fake.state.add_fault(SUBSCRIBE_PATH, "errcode", errcode=-1, count=1)  # WeChat is busy once

    m = api.client(manager)
    lead = api.lead(manager, name="赵敏", phone="13811112222", source="官网表单")
    ok(m.patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": alice.id}))

    def wechat(status: str) -> dict | None:
        items = ok(api.client(admin).get("/api/deliveries", params={"channel": "wechat", "status": status}))["items"]
        return items[0] if items else None

    wait_for(lambda: wechat("failed"))
    api.ctx.clock.advance(seconds=3600)
    api.ctx.signals.notifications_committed(set())
    sent = wait_for(lambda: wechat("sent"))

    # Two more notices to bob, then shown as the digest rules leave them: one held, one merged.
    for name in ("钱七", "孙八"):
        other = api.lead(manager, name=name)
        ok(m.patch(f"/api/customers/{other['id']}/assign", json={"assignedTo": bob.id}))
    wait_for(lambda: ok(api.client(admin).get("/api/deliveries", params={"status": "sent"}))["total"] == 4)
    with api.ctx.db.write() as s:
        held_id, merged_id = s.scalars(
            select(Delivery.id).where(Delivery.recipient_id == bob.id).order_by(Delivery.id)
        ).all()
        later = api.ctx.clock.now() + timedelta(days=1)
        s.execute(
            update(Delivery)
            .where(Delivery.id == held_id)
            # As on a push channel (in-app is never held or folded).
            .values(channel="wecom", status="pending", hold_reason=HOLD, next_attempt_at=later, sent_at=None)
        )
        s.execute(
            update(Delivery)
            .where(Delivery.id == merged_id)
            .values(channel="wecom", status="merged", merged_into=held_id)
        )

    me = consoles.new(api.url)
    page = me.sign_in(admin.token, "/console/deliveries")
    me.ready()

    row = page.locator(f"#deliveries tbody tr[data-delivery-id='{sent['id']}']").first
    toggle = row.get_by_role("button", name=f"第 {sent['id']} 条的发送经过")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    history = page.locator(f"#history-{sent['id']}")
    tries = history.locator("table.attempts tbody tr")
    expect(tries).to_have_count(2)
    first, second = tries.nth(0), tries.nth(1)
    expect(first).to_contain_text("第 1 次")
    expect(first).to_contain_text("失败，稍后重试")
    expect(first.locator(".errcode")).to_have_text("-1")
    expect(first.locator(".detail")).to_contain_text("系统繁忙")
    expect(second).to_contain_text("第 2 次")
    expect(second).to_contain_text("已发送")
    expect(second.locator(".errcode")).to_have_text("0")
    assert first.locator(".worker").inner_text().strip() not in ("", "—")
    assert "2026/03/02" in first.inner_text()  # the time of the try (Shanghai)
    me.screenshot("deliveries-history")
    toggle.click()  # and closed again
    expect(history).to_have_count(0)
    expect(toggle).to_have_attribute("aria-expanded", "false")

    held = page.locator(f"#deliveries tbody tr[data-delivery-id='{held_id}']")
    expect(held.locator(".error-cell")).to_have_text(f"等待原因：{HOLD}")
    merged = page.locator(f"#deliveries tbody tr[data-delivery-id='{merged_id}']")
    expect(merged.locator(".error-cell")).to_have_text(f"已合并到 #{held_id}")
    expect(merged.locator(".status-cell")).to_have_text("已合并")

    page.get_by_label("状态", exact=True).select_option(label="已合并")
    page.get_by_role("button", name="筛选").click()
    expect(page.locator("#deliveries > tbody > tr")).to_have_count(1)
    expect(page.locator(f"#deliveries tbody tr[data-delivery-id='{merged_id}']")).to_be_visible()
    expect(page.locator("#counters thead")).to_contain_text("已合并")

    # A manager sees their team's history too.
    boss = consoles.new(api.url)
    view = boss.sign_in(manager.token, "/console/deliveries")
    boss.ready()
    view.get_by_role("button", name=f"第 {sent['id']} 条的发送经过").click()
    expect(view.locator(f"#history-{sent['id']} table.attempts tbody tr")).to_have_count(2)
