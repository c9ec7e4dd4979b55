"""End to end: a person's channel choice decides what reaches the fake WeChat / WeCom.

A real leadpush (uvicorn, dispatcher, scheduler; SQLite and PostgreSQL) talks to the fake over real HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from leadpush_fakes.wechat import WECOM_SEND_PATH
from sqlalchemy import select, update
from support import Api, Person, ok, wait_for
from support.channels import TEMPLATE, FakeWeChatServer

from leadpush.context import AppContext
from leadpush.leads.models import Customer
from leadpush.notify.ledger import write_notifications
from leadpush.notify.models import Delivery, Notification
from leadpush.transfer.messaging import transfer_warning
from leadpush.users.models import User

PREFS = "/api/me/notification-preferences"


@dataclass
class World:
    api: Api
    ctx: AppContext
    fake: FakeWeChatServer
    admin: Person
    manager: Person
    alice: Person  # mini program (openid) and WeCom
    eve: Person  # mini program only

    def give_credits(self, who: Person, openid: str, n: int) -> None:
        for _ in range(n):
            body = {"errMsg": "requestSubscribeMessage:ok", TEMPLATE: "accept"}
            ok(self.api.client(who).post("/api/wechat/subscriptions", json=body))
        self.fake.state.add_credits(openid, TEMPLATE, n)

    def assign_new_lead(self, to: Person, name: str) -> int:
        lead = self.api.lead(self.manager, name=name)
        r = self.api.client(self.manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": to.id})
        ok(r)
        return lead["id"]

    def settled(self, who: Person, kind: str) -> dict[str, Delivery]:
        """Once none is pending or being sent: the deliveries of `who`'s latest notice of `kind` by channel."""

        def rows() -> dict[str, Delivery] | None:
            with self.ctx.db.read() as session:
                note = session.scalars(
                    select(Notification)
                    .where(Notification.recipient_id == who.id, Notification.kind == kind)
                    .order_by(Notification.id.desc())
                ).first()
                if note is None:
                    return None
                found = {
                    d.channel: d for d in session.scalars(select(Delivery).where(Delivery.notification_id == note.id))
                }
            return found if all(d.status not in ("pending", "sending") for d in found.values()) else None

        result = wait_for(rows)
        assert isinstance(result, dict)
        return result


@pytest.fixture
def world(pushing: Api, fake: FakeWeChatServer) -> World:
    api = pushing
    return World(
        api=api,
        ctx=api.ctx,
        fake=fake,
        admin=api.user("管理员", "admin", None),
        manager=api.user("王经理", "manager", "A"),
        alice=api.user("李丽", "sales", "A", wechat_openid="o-alice", wecom_userid="alice"),
        eve=api.user("吴敏", "sales", "A", wechat_openid="o-eve"),
    )


def test_who_turned_wechat_off_for_new_leads_gets_no_wechat_message(world: World) -> None:
    w = world
    w.give_credits(w.alice, "o-alice", 3)  # WeChat could send: it is her choice that it does not
    ok(w.api.client(w.alice).put(PREFS, json={"channels": {"new_leads": ["wecom"]}}))

    w.assign_new_lead(w.alice, "张三")

    [card] = wait_for(lambda: w.fake.state.get_messages("wecom"))
    assert card["body"]["touser"] == "alice"
    rows = w.settled(w.alice, "customer_assigned")
    assert rows["wechat"].status == "skipped" and rows["wechat"].policy == "用户已关闭微信小程序的「新线索」通知"
    assert rows["wecom"].status == "sent" and rows["inapp"].status == "sent"
    assert w.fake.state.get_messages("subscribe") == []
    assert w.fake.state.get_credits("o-alice", TEMPLATE) == 3  # not one spent


def test_who_turned_wechat_on_for_transfer_warnings_gets_a_wechat_message_for_a_warning(world: World) -> None:
    w = world
    w.give_credits(w.eve, "o-eve", 3)
    ok(w.api.client(w.eve).put(PREFS, json={"channels": {"transfer_warning": ["wechat"]}}))
    rule = {
        "name": "24小时未跟进退回公海",
        "condition": "no_follow_up_after_assign",
        "thresholdHours": 24,
        "warnBeforeHours": 2,
        "action": "public_pool",
    }
    ok(w.api.client(w.admin).post("/api/auto-transfer/rules", json=rule), 201)
    lead_id = w.assign_new_lead(w.eve, "李四")
    [assigned] = wait_for(lambda: w.fake.state.get_messages("subscribe"))  # her new lead, on WeChat by default
    assert assigned["body"]["touser"] == "o-eve"
    # Its warning is due: the next run warns her.
    with w.ctx.db.write() as session:
        past = w.ctx.clock.now() - timedelta(minutes=1)
        session.execute(update(Customer).where(Customer.id == lead_id).values(transfer_warn_at=past))

    def run() -> bool:
        r = w.api.client(w.admin).post("/api/auto-transfer/run", json={})
        return r.status_code == 200  # 409 while the scheduler's own run holds the lease

    wait_for(run)
    messages = wait_for(lambda: (m := w.fake.state.get_messages("subscribe")) and len(m) == 2 and m)
    assert isinstance(messages, list)
    warning = messages[1]["body"]
    assert warning["touser"] == "o-eve" and warning["data"]["thing1"]["value"] == "李四"
    rows = w.settled(w.eve, "transfer_warning")
    assert rows["wechat"].status == "sent"
    assert "wecom" not in rows  # not bound: nothing to record


def test_wechat_turned_on_for_warnings_takes_over_when_wecom_cannot_deliver(world: World) -> None:
    """WeChat chosen beside WeCom joins WeCom's chain after it ("one of"): WeCom first, WeChat only if WeCom
    cannot deliver — the send-time fallback follows the person's chain, not only the policy's."""
    w = world
    w.give_credits(w.alice, "o-alice", 3)
    ok(w.api.client(w.alice).put(PREFS, json={"channels": {"transfer_warning": ["wechat", "wecom"]}}))
    w.fake.state.add_fault(WECOM_SEND_PATH, "errcode", errcode=81013, errmsg="user not found", count=1)
    with w.ctx.db.write() as session:
        alice = session.get_one(User, w.alice.id)
        due = w.ctx.clock.now() + timedelta(hours=2)
        # The lead carries the deadline the warning is about, as the engine keeps it (else it is stale: expiry).
        lead = Customer(
            name="王五", phone="13800138000", source="抖音广告", owner_id=alice.id, version=1, transfer_due_at=due
        )
        session.add(lead)
        session.flush()
        warning = transfer_warning(alice, lead, None, due, w.ctx.clock.now(), w.ctx.settings.tz)
        write_notifications(session, w.ctx.settings, w.ctx.signals, [warning], w.ctx.clock.now())

    [message] = wait_for(lambda: w.fake.state.get_messages("subscribe"))
    assert message["body"]["touser"] == "o-alice" and message["body"]["data"]["thing1"]["value"] == "王五"
    rows = w.settled(w.alice, "transfer_warning")
    assert rows["wecom"].status == "dead" or rows["wecom"].status == "failed"
    assert rows["wechat"].status == "sent" and "企业微信未送达" in (rows["wechat"].policy or "")
