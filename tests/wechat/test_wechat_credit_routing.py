"""Credit-aware routing, end to end: a real leadpush (SQLite and PostgreSQL) and the fake WeChat / WeCom
over real HTTP.

- 45009 (WeChat's daily quota): the notice goes to WeCom at once instead of waiting for midnight, and WeChat
  is not called again that day; someone without WeCom waits for the local midnight, without calls in vain.
- The last credit (LEADPUSH_WECHAT_CREDIT_RESERVE = 1) is kept for a new lead: a transfer warning (which
  this deployment routes "wechat|wecom") goes to WeCom instead, or without WeCom only in-app.
- No credit at all: a new lead goes to WeCom.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from leadpush_fakes.wechat import SUBSCRIBE_PATH
from sqlalchemy import select
from support import DATABASES, Api, Person, ServerThread, ok, wait_for
from support.channels import TEMPLATE, FakeWeChatServer, leadpush_against

from leadpush.context import AppContext
from leadpush.leads.models import Customer
from leadpush.notify.ledger import write_notifications
from leadpush.notify.models import Delivery, Notification
from leadpush.transfer.messaging import transfer_warning
from leadpush.users.models import User

# Transfer warnings may use WeChat here (as a person's preference would add it), WeCom taking over.
POLICY = '{"transfer_warning": ["inapp", "wechat|wecom", "webhook"]}'
QUOTA = "微信今日调用已达上限（45009），已改用企业微信"


@pytest.fixture(scope="module", params=DATABASES)
def running(
    request: pytest.FixtureRequest, fake: FakeWeChatServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AppContext, ServerThread]]:
    """`running` with transfer warnings on "wechat|wecom" and the default reserve of one credit."""
    tmp = str(tmp_path_factory.mktemp(request.param))
    with leadpush_against(fake, request.param, tmp, channel_policy=POLICY, wechat_credit_reserve=1) as stack:
        yield stack


@dataclass
class World:
    api: Api
    ctx: AppContext
    fake: FakeWeChatServer
    manager: Person
    alice: Person  # mini program and WeCom
    erin: Person  # mini program only
    warnings: Iterator[int] = field(default_factory=itertools.count)

    def credit(self, who: Person, openid: str, n: int) -> None:
        for _ in range(n):
            ok(self.api.client(who).post("/api/wechat/subscriptions", json={TEMPLATE: "accept"}))
        self.fake.state.add_credits(openid, TEMPLATE, n)

    def credits(self, who: Person) -> int:
        return int(ok(self.api.client(who).get("/api/wechat/subscriptions"))["credits"])

    def assign(self, who: Person, name: str = "张三") -> int:
        lead = self.api.lead(self.manager, name=name)
        ok(self.api.client(self.manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": who.id}))
        return int(lead["id"])

    def warn(self, who: Person, lead_id: int) -> int:
        """A transfer warning for `who` about `lead_id`, written as the transfer engine writes it."""
        now = self.ctx.clock.now()
        with self.ctx.db.write() as session:
            owner = session.get(User, who.id)
            customer = session.get(Customer, lead_id)
            assert owner is not None and customer is not None
            due = now + timedelta(hours=2, seconds=next(self.warnings))  # each warning its own deadline
            # As the engine keeps it: the owner is warned about the lead's own deadline (expiry skips any other).
            customer.owner_id, customer.transfer_due_at = who.id, due
            item = transfer_warning(owner, customer, None, due, now, self.ctx.settings.tz)
            [note] = write_notifications(session, self.ctx.settings, self.ctx.signals, [item], now)
        return note.id  # written (and numbered) as the transaction commits

    def rows(self, kind: str | None = None) -> list[tuple[Delivery, str]]:
        with self.ctx.db.read() as session:
            q = select(Delivery, Notification.kind).join(Notification, Notification.id == Delivery.notification_id)
            if kind:
                q = q.where(Notification.kind == kind)
            return [(d, k) for d, k in session.execute(q.order_by(Delivery.id)).all()]

    def of(self, notification_id: int) -> dict[str, Delivery]:
        with self.ctx.db.read() as session:
            rows = session.scalars(select(Delivery).where(Delivery.notification_id == notification_id))
            return {d.channel: d for d in rows}

    def settled(self, notification_id: int) -> dict[str, Delivery]:
        return wait_for(
            lambda: (
                (r := self.of(notification_id))
                and all(d.status not in ("pending", "sending") for d in r.values())
                and r
            ),
            15,
        )

    def note_of(self, lead_id: int, kind: str) -> int:
        with self.ctx.db.read() as session:
            ids = [
                n.id
                for n in session.scalars(select(Notification).where(Notification.kind == kind))
                if n.payload.get("customerId") == lead_id
            ]
        assert len(ids) == 1, ids
        return ids[0]

    def subscribe_calls(self) -> int:
        """Requests that reached WeChat's send endpoint: accepted, refused, or answered by an injected fault."""
        stats = self.fake.state.stats()
        return (
            stats["accepted"].get("subscribe", 0)
            + sum(stats["rejected_by_kind"].get("subscribe", {}).values())
            + sum(stats["rejected_by_kind"].get("fault", {}).values())
        )

    def cards(self, touser: str) -> list[dict]:
        return [m for m in self.fake.state.get_messages("wecom") if m["body"]["touser"] == touser]


@pytest.fixture
def world(pushing: Api, fake: FakeWeChatServer) -> World:
    api = pushing
    return World(
        api=api,
        ctx=api.ctx,
        fake=fake,
        manager=api.user("王经理", "manager", "A"),
        alice=api.user("李丽", "sales", "A", wechat_openid="o-alice", wecom_userid="alice"),
        erin=api.user("吴敏", "sales", "A", wechat_openid="o-erin"),
    )


def test_45009_goes_to_wecom_at_once_and_wechat_is_not_called_again_that_day(world: World) -> None:
    w = world
    w.credit(w.alice, "o-alice", 3)
    w.fake.state.add_fault(SUBSCRIBE_PATH, "errcode", errcode=45009, count=1)

    first = w.assign(w.alice, "张三")
    # The same notice arrives on WeCom within seconds, not after midnight.
    [card] = wait_for(lambda: w.cards("alice"), 15)
    assert "张三" in str(card["body"])
    rows = w.settled(w.note_of(first, "customer_assigned"))
    assert {c: d.status for c, d in rows.items()} == {"inapp": "sent", "wechat": "skipped", "wecom": "sent"}
    assert rows["wechat"].last_error == QUOTA
    assert "45009" in (rows["wecom"].policy or "")
    assert w.subscribe_calls() == 1
    assert w.credits(w.alice) == 3  # the credit is given back: nothing was sent

    # The next notice that day does not try WeChat at all.
    second = w.assign(w.alice, "李四")
    wait_for(lambda: len(w.cards("alice")) == 2, 15)
    rows = w.settled(w.note_of(second, "customer_assigned"))
    assert {c: d.status for c, d in rows.items()} == {"inapp": "sent", "wechat": "skipped", "wecom": "sent"}
    assert rows["wechat"].last_error == QUOTA
    assert w.subscribe_calls() == 1
    assert w.credits(w.alice) == 3
    assert w.fake.state.get_messages("subscribe") == []


def test_without_wecom_45009_waits_for_midnight_without_calling_wechat_in_vain(world: World) -> None:
    w = world
    tz = w.ctx.settings.tz
    if w.ctx.clock.now().astimezone(tz).hour == 23:
        # The quota resets at the local midnight: start after it, not minutes before (16:00-17:00 UTC).
        today = w.ctx.clock.now().astimezone(tz).date()
        w.ctx.clock.set(
            datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=tz) + timedelta(minutes=30)
        )
    w.credit(w.erin, "o-erin", 2)
    w.fake.state.add_fault(SUBSCRIBE_PATH, "errcode", errcode=45009, count=1)
    first = w.assign(w.erin, "张三")
    note1 = w.note_of(first, "customer_assigned")
    wechat = wait_for(lambda: (d := w.of(note1).get("wechat")) and d.status == "failed" and d, 15)
    assert "45009" in (wechat.last_error or "")
    assert wechat.next_attempt_at is not None and wechat.next_attempt_at > w.ctx.clock.now() + timedelta(minutes=5)
    assert w.subscribe_calls() == 1

    # Another notice the same day waits too, without a call, until the quota resets at the local midnight.
    local = w.ctx.clock.now().astimezone(tz)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=tz)
    second = w.assign(w.erin, "李四")
    note2 = w.note_of(second, "customer_assigned")
    waiting = wait_for(lambda: (d := w.of(note2).get("wechat")) and d.status == "failed" and d, 15)
    assert "45009" in (waiting.last_error or "")
    assert waiting.next_attempt_at is not None and waiting.next_attempt_at >= midnight
    assert w.subscribe_calls() == 1
    assert "wecom" not in w.of(note2)

    # After the local midnight WeChat is asked again, and both arrive.
    w.ctx.clock.set(midnight + timedelta(minutes=61))
    w.ctx.signals.notifications_committed(set())
    wait_for(lambda: {w.of(n)["wechat"].status for n in (note1, note2)} == {"sent"}, 15)
    assert len(w.fake.state.get_messages("subscribe")) == 2
    assert w.credits(w.erin) == 0


def test_the_last_credit_is_kept_for_a_new_lead_while_a_warning_goes_to_wecom(world: World) -> None:
    w = world
    w.credit(w.alice, "o-alice", 2)
    lead = w.api.lead(w.manager, name="王五")["id"]
    ok(w.api.client(w.manager).patch(f"/api/customers/{lead}/assign", json={"assignedTo": w.alice.id}))
    wait_for(lambda: len(w.fake.state.get_messages("subscribe")) == 1, 15)  # the assignment: 2 -> 1
    assert w.credits(w.alice) == 1

    # A warning may not take the last credit: WeCom takes over.
    warning = w.warn(w.alice, lead)
    [card] = wait_for(lambda: [m for m in w.cards("alice") if "即将被自动流转" in str(m["body"])], 15)
    rows = w.settled(warning)
    assert {c: d.status for c, d in rows.items()} == {"inapp": "sent", "wechat": "skipped", "wecom": "sent"}
    assert rows["wechat"].last_error == "订阅次数仅剩 1 次，留给新线索"
    assert "留给新线索" in (rows["wecom"].policy or "")
    assert w.credits(w.alice) == 1
    assert len(w.fake.state.get_messages("subscribe")) == 1

    # The next new lead gets it on WeChat.
    w.assign(w.alice, "赵六")
    [_, last] = wait_for(lambda: (m := w.fake.state.get_messages("subscribe")) and len(m) == 2 and m, 15)
    assert last["body"]["data"]["thing1"] == {"value": "赵六"}
    assert w.credits(w.alice) == 0
    assert len(w.cards("alice")) == 1


def test_a_warning_uses_wechat_while_credits_are_above_the_reserve(world: World) -> None:
    w = world
    w.credit(w.erin, "o-erin", 2)
    lead = w.api.lead(w.manager, name="王五")["id"]
    first = w.warn(w.erin, lead)
    wait_for(lambda: len(w.fake.state.get_messages("subscribe")) == 1, 15)
    assert w.settled(first)["wechat"].status == "sent"
    assert w.credits(w.erin) == 1
    # Someone without WeCom: the second warning is only in-app; the last credit stays for a new lead.
    second = w.warn(w.erin, lead)
    rows = w.settled(second)
    assert {c: d.status for c, d in rows.items()} == {"inapp": "sent", "wechat": "skipped"}
    assert rows["wechat"].last_error == "订阅次数仅剩 1 次，留给新线索"
    assert w.credits(w.erin) == 1
    items = ok(w.api.client(w.erin).get("/api/notifications"))["items"]
    assert [n["type"] for n in items].count("transfer_warning") == 2


def test_with_no_credit_a_new_lead_goes_to_wecom(world: World) -> None:
    w = world
    lead = w.assign(w.alice, "张三")
    wait_for(lambda: w.cards("alice"), 15)
    rows = w.settled(w.note_of(lead, "customer_assigned"))
    assert {c: d.status for c, d in rows.items()} == {"inapp": "sent", "wechat": "skipped", "wecom": "sent"}
    assert "no credit" in (rows["wechat"].last_error or "")
    assert w.subscribe_calls() == 0
