"""Time-window digests: notices that follow a push to the same person within the channel's window wait for
the window to end and then go as ONE message (one WeChat credit), carried by one delivery, the others
`merged` into it. In-app is never held. Against the fake WeChat/WeCom over real HTTP, SQLite and PostgreSQL,
on the injectable clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from leadpush_fakes.wechat import SUBSCRIBE_PATH
from sqlalchemy import select
from support import DATABASES, Api, Person, ok, wait_for
from support.channels import TEMPLATE, FakeWeChatServer, leadpush_against
from support.servers import ServerThread

from leadpush.context import AppContext
from leadpush.notify.channels.base import DeliveryJob
from leadpush.notify.dispatcher import claim_due_deliveries
from leadpush.notify.models import Delivery

WECHAT_WINDOW, WECOM_WINDOW = 30, 600


@pytest.fixture(scope="module", params=DATABASES)
def running(
    request: pytest.FixtureRequest, fake: FakeWeChatServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AppContext, ServerThread]]:
    """A leadpush with digest windows on (test support turns them off by default)."""
    with leadpush_against(
        fake,
        request.param,
        str(tmp_path_factory.mktemp(request.param)),
        digest_window_wechat=WECHAT_WINDOW,
        digest_window_wecom=WECOM_WINDOW,
        delivery_poll_interval=0.2,
    ) as stack:
        yield stack


@dataclass
class World:
    api: Api
    fake: FakeWeChatServer
    admin: Person
    manager: Person

    def assign(self, to: Person, name: str = "张三", source: str = "抖音广告") -> int:
        lead = self.api.lead(self.manager, name=name, source=source)["id"]
        r = self.api.client(self.manager).patch(f"/api/customers/{lead}/assign", json={"assignedTo": to.id})
        assert r.status_code == 200, r.text
        return lead

    def credits(self, who: Person, n: int) -> None:
        for _ in range(n):
            ok(self.api.client(who).post("/api/wechat/subscriptions", json={TEMPLATE: "accept"}))
        self.fake.state.add_credits("o-alice", TEMPLATE, n)

    def rows(self, channel: str) -> list[Delivery]:
        with self.api.ctx.db.read() as session:
            return list(session.scalars(select(Delivery).where(Delivery.channel == channel).order_by(Delivery.id)))

    def ledger(self, channel: str) -> list[dict]:
        """What an admin sees in the deliveries page (oldest first)."""
        items = ok(self.api.client(self.admin).get("/api/deliveries", params={"channel": channel}))["items"]
        return sorted(items, key=lambda d: d["id"])

    def nudge(self, **delta: float) -> None:
        """Move the clock and wake the dispatcher, as a new commit would."""
        self.api.ctx.clock.advance(**delta)
        self.api.ctx.signals.notifications_committed(set())

    def subscribes(self) -> list[dict]:
        return self.fake.state.get_messages("subscribe")

    def cards(self) -> list[dict]:
        return self.fake.state.get_messages("wecom")


@pytest.fixture
def world(pushing: Api, fake: FakeWeChatServer) -> World:
    return World(pushing, fake, pushing.user("管理员", "admin", None), pushing.user("王经理", "manager", "A"))


def in_app(w: World, who: Person) -> list[str]:
    return [n["type"] for n in ok(w.api.client(who).get("/api/notifications"))["items"]]


def held(w: World, channel: str, n: int) -> list[Delivery]:
    """Wait until `n` deliveries on `channel` are held (pending with a reason)."""
    rows = wait_for(lambda: (r := [d for d in w.rows(channel) if d.hold_reason]) and len(r) == n and r)
    assert isinstance(rows, list)
    return rows


def test_five_quick_assignments_spend_two_wechat_credits(world: World) -> None:
    w = world
    alice = w.api.user("李丽", "sales", "A", wechat_openid="o-alice")
    w.credits(alice, 5)
    w.assign(alice, "客户一")
    [first] = wait_for(w.subscribes)
    assert first["body"]["data"]["thing1"] == {"value": "客户一"}
    for i in range(2, 6):
        w.assign(alice, f"客户{i}", source="百度" if i == 5 else "抖音广告")

    # In-app has all five at once; WeChat waits for the window that the first push opened.
    assert wait_for(lambda: len(in_app(w, alice)) == 5)
    waiting = held(w, "wechat", 4)
    pushed = w.api.ctx.clock.now()  # the clock has not moved: the first push went now
    for d in waiting:
        assert d.status == "pending" and d.attempts == 0
        assert d.hold_reason == "合并窗口：30 秒内的通知合并为一条"
        assert d.next_attempt_at == pushed + timedelta(seconds=WECHAT_WINDOW)
    assert len(w.subscribes()) == 1

    w.nudge(seconds=WECHAT_WINDOW)
    messages = wait_for(lambda: (m := w.subscribes()) and len(m) == 2 and m)
    digest = messages[1]["body"]
    assert digest["touser"] == "o-alice"
    assert digest["data"]["thing1"] == {"value": "您有 4 条新线索"}
    assert digest["data"]["thing3"] == {"value": "抖音广告、百度"}
    assert "page" not in digest  # the digest page (unset: the mini program's home)

    # The ledger: the first sent alone, one carrier sent for the other four, three merged into it.
    ledger = wait_for(
        lambda: (rows := w.ledger("wechat")) and all(d["status"] in ("sent", "merged") for d in rows) and rows
    )
    assert [d["status"] for d in ledger] == ["sent", "sent", "merged", "merged", "merged"]
    rows = w.rows("wechat")
    carrier = rows[1]
    assert carrier.folds == sorted(d.notification_id for d in rows[2:])
    assert [d.merged_into for d in rows] == [None, None, carrier.id, carrier.id, carrier.id]
    assert all(d.hold_reason is None for d in rows)
    assert ok(w.api.client(alice).get("/api/wechat/subscriptions"))["credits"] == 3  # two spent
    assert len(w.subscribes()) == 2


def test_a_wecom_window_folds_mixed_notices_into_one_card_and_urgent_ones_never_wait(world: World) -> None:
    w = world
    dave = w.api.user("周杰", "sales", "A", wecom_userid="dave")
    ok(
        w.api.client(w.admin).post(
            "/api/sla-rules", json={"name": "电话线索", "sources": ["电话"], "remindAfterMinutes": 5}
        ),
        201,
    )
    w.assign(dave, "客户一")
    wait_for(lambda: len(w.cards()) == 1)
    w.assign(dave, "客户二", source="电话")
    w.assign(dave, "客户三")
    held(w, "wecom", 2)
    w.nudge(minutes=5)  # the first-contact reminder for 客户二: urgent, inside the window, goes at once
    cards = wait_for(lambda: (c := w.cards()) and len(c) == 2 and c)
    assert cards[1]["body"]["textcard"]["title"] == "请尽快联系线索「客户二」"
    assert len(held(w, "wecom", 2)) == 2  # the lead notices still wait
    assert in_app(w, dave) == ["customer_assigned", "customer_assigned", "customer_assigned", "sla_reminder"]

    # The window counts from the last push (the reminder): then both lead notices go as one card.
    w.nudge(seconds=WECOM_WINDOW)
    cards = wait_for(lambda: (c := w.cards()) and len(c) == 3 and c)
    card = cards[2]["body"]["textcard"]
    assert card["title"] == "您有 2 条新线索"
    assert card["description"] == "· 您有一条新线索：客户二\n· 您有一条新线索：客户三"
    ledger = wait_for(lambda: (rows := w.ledger("wecom")) and all(d["status"] != "pending" for d in rows) and rows)
    assert [(d["notificationType"], d["status"]) for d in ledger] == [
        ("customer_assigned", "sent"),
        ("customer_assigned", "sent"),
        ("customer_assigned", "merged"),
        ("sla_reminder", "sent"),
    ]


def test_a_digest_that_dies_is_retried_by_the_operator_as_the_same_digest(world: World) -> None:
    w = world
    alice = w.api.user("李丽", "sales", "A", wechat_openid="o-alice")
    w.credits(alice, 3)
    w.assign(alice, "客户一")
    wait_for(w.subscribes)
    for i in range(2, 5):
        w.assign(alice, f"客户{i}")
    held(w, "wechat", 3)
    w.fake.state.add_fault(SUBSCRIBE_PATH, "errcode", errcode=40037, count=1)  # a permanent answer
    w.nudge(seconds=WECHAT_WINDOW)
    dead = wait_for(lambda: [d for d in w.ledger("wechat") if d["status"] == "dead"])
    assert [d["status"] for d in w.ledger("wechat")] == ["sent", "dead", "merged", "merged"]
    assert len(w.subscribes()) == 1

    r = w.api.client(w.admin).post(f"/api/deliveries/{dead[0]['id']}/retry")
    assert r.status_code == 200, r.text
    messages = wait_for(lambda: (m := w.subscribes()) and len(m) == 2 and m)
    assert messages[1]["body"]["data"]["thing1"] == {"value": "您有 3 条新线索"}
    ledger = wait_for(lambda: (rows := w.ledger("wechat")) and rows[1]["status"] == "sent" and rows)
    assert [d["status"] for d in ledger] == ["sent", "sent", "merged", "merged"]
    # A merged row is final: it went with its carrier and cannot be sent on its own.
    refused = w.api.client(w.admin).post(f"/api/deliveries/{ledger[2]['id']}/retry")
    assert refused.status_code == 409


def test_a_digest_without_wechat_credit_falls_back_to_one_wecom_card(world: World) -> None:
    w = world
    alice = w.api.user("李丽", "sales", "A", wechat_openid="o-alice", wecom_userid="alice")
    w.credits(alice, 1)
    w.assign(alice, "客户一")
    wait_for(w.subscribes)
    for name in ("客户二", "客户三", "客户四"):
        w.assign(alice, name)
    held(w, "wechat", 3)
    w.nudge(seconds=WECHAT_WINDOW)
    [card] = wait_for(w.cards)
    assert card["body"]["touser"] == "alice"
    assert card["body"]["textcard"]["title"] == "您有 3 条新线索"
    assert (
        card["body"]["textcard"]["description"]
        == "· 您有一条新线索：客户二\n· 您有一条新线索：客户三\n· 您有一条新线索：客户四"
    )
    assert len(w.subscribes()) == 1
    wechat = w.rows("wechat")
    [wecom] = wait_for(lambda: [d for d in w.rows("wecom") if d.status == "sent"])
    assert wechat[1].status == "skipped"
    assert wecom.notification_id == wechat[1].notification_id
    assert wecom.folds == wechat[1].folds == sorted(d.notification_id for d in wechat[2:])
    assert [d.status for d in wechat[2:]] == ["merged", "merged"]
    assert len(w.cards()) == 1


def claim_at(w: World, when: datetime, holder: str) -> list[DeliveryJob]:
    """Claim as another worker would at `when` (the running one's clock is still before it)."""
    ctx = w.api.ctx
    return claim_due_deliveries(ctx.db, when, 60, 10, holder, (), ctx.settings)


def test_a_carrier_taken_over_after_a_crash_sends_the_same_digest(world: World) -> None:
    w = world
    alice = w.api.user("李丽", "sales", "A", wechat_openid="o-alice")
    w.credits(alice, 2)
    w.assign(alice, "客户一")
    wait_for(w.subscribes)
    for name in ("客户二", "客户三", "客户四"):
        w.assign(alice, name)
    waiting = held(w, "wechat", 3)
    due = w.api.ctx.clock.now() + timedelta(seconds=WECHAT_WINDOW)
    # A worker claims the digest and dies before sending it.
    [job] = claim_at(w, due, "crashed")
    assert job.delivery_id == waiting[0].id
    assert [n.title for n in job.folded] == ["您有一条新线索：客户三", "您有一条新线索：客户四"]
    assert [d.status for d in w.rows("wechat")[1:]] == ["sending", "merged", "merged"]

    w.nudge(seconds=WECHAT_WINDOW + 61)  # its lease runs out: the running worker takes the carrier over
    messages = wait_for(lambda: (m := w.subscribes()) and len(m) == 2 and m)
    assert messages[1]["body"]["data"]["thing1"] == {"value": "您有 3 条新线索"}
    rows = wait_for(lambda: (r := w.rows("wechat")) and r[1].status == "sent" and r)
    assert rows[1].attempts == 2 and [d.status for d in rows[2:]] == ["merged", "merged"]


def test_a_waiting_row_another_worker_holds_is_left_to_it(world: World) -> None:
    w = world
    db = w.api.ctx.db
    if not db.is_postgres:
        pytest.skip("row locks (FOR UPDATE SKIP LOCKED) are PostgreSQL's; SQLite has one writer")
    alice = w.api.user("李丽", "sales", "A", wechat_openid="o-alice")
    w.credits(alice, 2)
    w.assign(alice, "客户一")
    wait_for(w.subscribes)
    for name in ("客户二", "客户三", "客户四"):
        w.assign(alice, name)
    b, c, d = held(w, "wechat", 3)
    due = w.api.ctx.clock.now() + timedelta(seconds=WECHAT_WINDOW)
    with db.engine.connect() as other:  # another worker's claim, in the middle of its transaction
        other.execute(select(Delivery.id).where(Delivery.id == c.id).with_for_update())
        [job] = claim_at(w, due, "w1")
        other.rollback()
    assert job.delivery_id == b.id
    assert [n.notification_id for n in job.folded] == [d.notification_id]
    by_id = {r.id: r for r in w.rows("wechat")}
    assert by_id[c.id].status == "pending" and by_id[c.id].merged_into is None
    assert by_id[d.id].status == "merged" and by_id[d.id].merged_into == b.id
