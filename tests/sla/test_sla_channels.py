"""The first-contact reminder reaches the owner on their strongest channel: WeCom when they have a WeCom
id, else a WeChat subscribe message while they have credits; always in-app. Against the fake WeChat/WeCom."""

from __future__ import annotations

from support import Api, ok, wait_for
from support.channels import FakeWeChatServer


def test_the_reminder_goes_to_wecom_else_wechat(pushing: Api, fake: FakeWeChatServer) -> None:
    api = pushing
    admin = api.user("管理员", "admin", None)
    manager = api.user("王经理", "manager", "A")
    alice = api.user("李丽", "sales", "A", wechat_openid="o-alice", wecom_userid="alice")
    erin = api.user("吴敏", "sales", "A", wechat_openid="o-erin")
    template = api.ctx.settings.wechat_template_id
    # Three accepted subscriptions (the fake keeps the same count): the assignment spends one, the reminder
    # one, and the last is kept for a new lead (LEADPUSH_WECHAT_CREDIT_RESERVE=1: a reminder may not take it).
    for _ in range(3):
        ok(api.client(erin).post("/api/wechat/subscriptions", json={template: "accept"}))
    fake.state.add_credits("o-erin", template, 3)
    ok(
        api.client(admin).post(
            "/api/sla-rules", json={"name": "5分钟", "remindAfterMinutes": 5, "reassignAfterMinutes": 60}
        ),
        201,
    )
    leads = {}
    for person, name in ((alice, "周杰"), (erin, "王五")):
        lead = api.lead(manager, name=name)
        ok(api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": person.id}))
        leads[person.id] = lead["id"]
    # The assignments themselves ("wechat|wecom"): erin's by WeChat, alice's (no credit) by WeCom.
    wait_for(lambda: len(fake.state.get_messages("subscribe")) == 1)
    api.nudge(minutes=5)
    cards = wait_for(lambda: [m for m in fake.state.get_messages("wecom") if "仍未查看" in str(m["body"])], 15)
    assert cards[0]["body"]["touser"] == "alice"
    assert cards[0]["body"]["textcard"]["title"] == "请尽快联系线索「周杰」"
    subscribes = wait_for(lambda: (s := fake.state.get_messages("subscribe")) and len(s) == 2 and s, 15)
    assert subscribes[-1]["body"]["touser"] == "o-erin"
    assert subscribes[-1]["body"]["data"]["thing1"] == {"value": "王五"}
    # Both also in-app.
    for person in (alice, erin):
        items = ok(api.client(person).get("/api/notifications"))["items"]
        assert [n["type"] for n in items] == ["customer_assigned", "sla_reminder"]
