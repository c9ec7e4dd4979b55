"""Expiry: a time-sensitive notice that is no longer true when its delivery comes due — retried after a failed
send, or held — is skipped with the reason, not sent. Against the fake WeChat/WeCom over real HTTP, on a
service without its scheduler role: the test runs the transfer, the first-contact ladder and the reminders
itself (as the scheduler would), so it knows which run wrote which notice."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from leadpush_fakes.wechat import WECOM_SEND_PATH
from sqlalchemy import select, update
from support import DATABASES, Api, inapp_left_to_the_worker, ok, wait_for
from support.channels import FakeWeChatServer, leadpush_against
from support.servers import ServerThread

from leadpush.context import AppContext
from leadpush.leads.models import Customer
from leadpush.leads.reminders import run_due_reminders
from leadpush.notify.ledger import write_notifications, write_prepared
from leadpush.notify.models import Delivery, Notification
from leadpush.sla.engine import run_due_steps
from leadpush.transfer.engine import run_transfer
from leadpush.transfer.messaging import transfer_warning
from leadpush.transfer.models import TransferRule
from leadpush.users.models import User


@pytest.fixture(scope="module", params=DATABASES)
def running(
    request: pytest.FixtureRequest, fake: FakeWeChatServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AppContext, ServerThread]]:
    """api + worker, no scheduler (overrides support.channels' `running`, which `pushing` builds on)."""
    tmp = str(tmp_path_factory.mktemp(request.param))
    with leadpush_against(fake, request.param, tmp, roles=frozenset({"api", "worker"})) as stack:
        yield stack


def cards_to(fake: FakeWeChatServer, userid: str, kind_title: str) -> list[dict]:
    return [
        m
        for m in fake.state.get_messages("wecom")
        if userid in m["touser"] and kind_title in str(m["body"].get("textcard", {}).get("title", ""))
    ]


def sent(api: Api, kind: str) -> bool:
    """The notice's WeCom card is out (read in the ledger: a straggler of an earlier test may reach the fake)."""
    d = delivery(api, kind)
    return d is not None and d.status == "sent"


def delivery(api: Api, kind: str, channel: str = "wecom") -> Delivery | None:
    with api.ctx.db.read() as session:
        return session.scalars(
            select(Delivery)
            .join(Notification, Notification.id == Delivery.notification_id)
            .where(Notification.kind == kind, Delivery.channel == channel)
            .order_by(Delivery.id.desc())
        ).first()


def failed_once(api: Api, fake: FakeWeChatServer, kind: str) -> Delivery:
    """The notice's WeCom delivery has failed (the fake answered "system busy") and waits for its retry."""
    found = wait_for(lambda: (d := delivery(api, kind)) is not None and d.status == "failed" and d)
    fake.state.clear_faults()
    return found


def retried(api: Api, kind: str) -> Delivery:
    """Move past the retry time and wait until the delivery has settled (sent or skipped)."""
    api.nudge(hours=1)
    return wait_for(lambda: (d := delivery(api, kind)) is not None and d.status in ("sent", "skipped") and d)


@pytest.fixture
def people(pushing: Api):
    class People:
        admin = pushing.user("管理员", "admin", None)
        manager = pushing.user("王经理", "manager", "A")
        alice = pushing.user("李丽", "sales", "A", wecom_userid="alice")
        bob = pushing.user("赵强", "sales", "A", wecom_userid="bob")

    return People


def assigned(api: Api, people, to, name: str = "张三") -> dict:
    return api.lead(people.manager, name=name, assignedTo=to.id)


WARNING_TITLE = "即将被自动流转"


def _moved(api: Api, people, lead: dict) -> None:
    ok(api.client(people.manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": people.bob.id}))


def _released(api: Api, people, lead: dict) -> None:
    ok(api.client(people.alice).post(f"/api/customers/{lead['id']}/release", json={}))


def _rule_disabled(api: Api, people, lead: dict) -> None:
    rule_id = ok(api.client(people.admin).get("/api/auto-transfer/rules"))[0]["id"]
    ok(api.client(people.admin).patch(f"/api/auto-transfer/rules/{rule_id}", json={"enabled": False}))


def _rule_deleted(api: Api, people, lead: dict) -> None:
    rule_id = ok(api.client(people.admin).get("/api/auto-transfer/rules"))[0]["id"]
    ok(api.client(people.admin).delete(f"/api/auto-transfer/rules/{rule_id}"))


def _deadline_passed(api: Api, people, lead: dict) -> None:
    api.ctx.clock.advance(hours=3)  # past the 24-hour deadline; no transfer runs here, the lead stays


def _followed_up(api: Api, people, lead: dict) -> None:
    r = api.client(people.alice).post(f"/api/customers/{lead['id']}/follow-ups", json={"content": "已电话联系"})
    ok(r, 201)


def _nothing(api: Api, people, lead: dict) -> None:
    return None


Meanwhile = Callable[[Api, object, dict], None]


@pytest.mark.parametrize(
    ("meanwhile", "reason"),
    [
        (_moved, "通知已失效：线索已转给他人"),
        (_released, "通知已失效：线索已退回公海"),
        (_rule_disabled, "通知已失效：流转规则已停用或删除"),
        (_rule_deleted, "通知已失效：流转规则已停用或删除"),
        (_deadline_passed, "通知已失效：流转截止时间已过"),
        (_followed_up, "通知已失效：流转截止时间已变更"),
        (_nothing, None),
    ],
    ids=["moved", "released", "rule-disabled", "rule-deleted", "deadline-passed", "followed-up", "still-true"],
)
def test_a_transfer_warning_retried_after_it_stopped_being_true_is_not_sent(
    pushing: Api, fake: FakeWeChatServer, people, meanwhile: Meanwhile, reason: str | None
) -> None:
    api = pushing
    ok(
        api.client(people.admin).post(
            "/api/auto-transfer/rules",
            json={
                "name": "24小时未跟进退回公海",
                "condition": "no_follow_up_after_assign",
                "thresholdHours": 24,
                "warnBeforeHours": 2,
                "action": "public_pool",
            },
        ),
        201,
    )
    lead = assigned(api, people, people.alice)
    wait_for(lambda: sent(api, "customer_assigned"))  # the assignment's card
    fake.state.add_fault(WECOM_SEND_PATH, errcode=-1)  # "system busy": the warning's card is retried later
    api.ctx.clock.advance(hours=22, minutes=30)
    run_transfer(api.ctx, "manual")
    failed_once(api, fake, "transfer_warning")
    meanwhile(api, people, lead)
    settled = retried(api, "transfer_warning")
    if reason is None:
        assert settled.status == "sent"
        assert len(cards_to(fake, "alice", WARNING_TITLE)) == 1
        return
    assert (settled.status, settled.last_error) == ("skipped", reason)
    assert cards_to(fake, "alice", WARNING_TITLE) == []
    assert cards_to(fake, "bob", WARNING_TITLE) == []


def _plan_moved(api: Api, people, lead: dict) -> None:
    _moved(api, people, lead)


def _plan_changed(api: Api, people, lead: dict) -> None:
    at = (api.ctx.clock.now() + timedelta(days=1)).isoformat()
    ok(api.client(people.alice).put(f"/api/customers/{lead['id']}/follow-up-plan", json={"at": at}))


def _plan_cleared(api: Api, people, lead: dict) -> None:
    ok(api.client(people.alice).delete(f"/api/customers/{lead['id']}/follow-up-plan"))


def _plan_done(api: Api, people, lead: dict) -> None:
    _followed_up(api, people, lead)


@pytest.mark.parametrize(
    ("meanwhile", "reason"),
    [
        (_plan_moved, "通知已失效：线索已转给他人"),
        (_released, "通知已失效：线索已退回公海"),
        (_plan_changed, "通知已失效：跟进计划已修改"),
        (_plan_cleared, "通知已失效：跟进计划已完成或已取消"),
        (_plan_done, "通知已失效：跟进计划已完成或已取消"),
        (_nothing, None),
    ],
    ids=["moved", "released", "changed", "cleared", "followed-up", "still-true"],
)
def test_a_follow_up_reminder_retried_after_the_plan_or_owner_changed_is_not_sent(
    pushing: Api, fake: FakeWeChatServer, people, meanwhile: Meanwhile, reason: str | None
) -> None:
    api = pushing
    lead = assigned(api, people, people.alice)
    wait_for(lambda: sent(api, "customer_assigned"))
    at = api.ctx.clock.now() + timedelta(hours=2)
    ok(api.client(people.alice).put(f"/api/customers/{lead['id']}/follow-up-plan", json={"at": at.isoformat()}))
    fake.state.add_fault(WECOM_SEND_PATH, errcode=-1)
    api.ctx.clock.advance(hours=2)
    assert run_due_reminders(api.ctx) == 1
    failed_once(api, fake, "followup_due")
    meanwhile(api, people, lead)
    settled = retried(api, "followup_due")
    if reason is None:
        assert settled.status == "sent"
        assert len(cards_to(fake, "alice", "跟进提醒")) == 1
        return
    assert (settled.status, settled.last_error) == ("skipped", reason)
    assert cards_to(fake, "alice", "跟进提醒") == [] and cards_to(fake, "bob", "跟进提醒") == []


def test_a_first_contact_reminder_retried_after_the_lead_was_opened_is_not_sent(
    pushing: Api, fake: FakeWeChatServer, people
) -> None:
    api = pushing
    ok(
        api.client(people.admin).post(
            "/api/sla-rules", json={"name": "5分钟", "remindAfterMinutes": 5, "reassignAfterMinutes": 60}
        ),
        201,
    )
    lead = assigned(api, people, people.alice)
    wait_for(lambda: sent(api, "customer_assigned"))
    fake.state.add_fault(WECOM_SEND_PATH, errcode=-1)
    api.ctx.clock.advance(minutes=5)
    assert run_due_steps(api.ctx) == 1
    failed_once(api, fake, "sla_reminder")
    ok(api.client(people.alice).get(f"/api/customers/{lead['id']}"))  # she opens it
    settled = retried(api, "sla_reminder")
    assert (settled.status, settled.last_error) == ("skipped", "通知已失效：线索已被查看")
    assert cards_to(fake, "alice", "请尽快联系") == []


def test_a_held_in_app_warning_for_a_lead_that_moved_does_not_pop_up_later(pushing: Api, people) -> None:
    """A warning whose deliveries are held (as a hold for quiet hours or a digest leaves them: pending, due
    later, with a reason) comes due after the lead moved: skipped on every channel, in-app included, and the
    notification is marked read, so a client catching up from the ledger lists it without a toast or badge."""
    api = pushing
    ok(
        api.client(people.admin).post(
            "/api/auto-transfer/rules",
            json={
                "name": "24小时",
                "condition": "no_follow_up_after_assign",
                "thresholdHours": 24,
                "warnBeforeHours": 2,
                "action": "public_pool",
            },
        ),
        201,
    )
    lead = assigned(api, people, people.alice)
    api.ctx.clock.advance(hours=22, minutes=30)
    now = api.ctx.clock.now()
    # The warning as a run in a process that does not push writes it (`leadpush transfer run`: its in-app row
    # pending for the worker), its deliveries held in the same commit.
    with inapp_left_to_the_worker(api.ctx), api.ctx.db.write() as session:
        customer = session.get_one(Customer, lead["id"])
        rule = session.get_one(TransferRule, customer.transfer_rule_id)
        owner = session.get_one(User, people.alice.id)
        assert customer.transfer_due_at is not None
        item = transfer_warning(owner, customer, rule, customer.transfer_due_at, now, api.ctx.settings.tz)
        (note,) = write_notifications(session, api.ctx.settings, api.ctx.signals, [item], now)
        write_prepared(session)  # the rows now, not at commit: the hold below is written in the same commit
        session.execute(
            update(Delivery)
            .where(Delivery.notification_id == note.id)
            .values(next_attempt_at=now + timedelta(minutes=10), hold_reason="免打扰时段，稍后发送")
        )
        note_id = note.id
    _moved(api, people, lead)
    unread_before = ok(api.client(people.alice).get("/api/notifications"))
    assert [n["readAt"] for n in unread_before["items"] if n["id"] == note_id] == [None]
    api.nudge(minutes=10)
    for channel in ("inapp", "wecom"):
        settled = wait_for(
            lambda c=channel: (d := delivery(api, "transfer_warning", c)) and d.status == "skipped" and d
        )
        assert settled.last_error == "通知已失效：线索已转给他人"
        assert settled.hold_reason is None
    items = ok(api.client(people.alice).get("/api/notifications"))["items"]
    assert [n["readAt"] is not None for n in items if n["id"] == note_id] == [True]
