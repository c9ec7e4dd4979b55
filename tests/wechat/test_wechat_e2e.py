"""End to end: an assignment through each of the four endpoints reaches the fake WeChat / WeCom as
exactly the expected request, and the channel policy's fallback sends one of them, never both.

A real leadpush (uvicorn, dispatcher, SQLite and PostgreSQL) talks to the fake over real HTTP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import pytest
from leadpush_fakes.wechat import SUBSCRIBE_PATH
from sqlalchemy import select
from support import Api, Person, database_url, start_stack, wait_for
from support.channels import (
    AGENTID,
    PUBLIC_URL,
    TEMPLATE,
    FakeWeChatServer,
    channel_settings,
    strict_state,
)

from leadpush.clock import SystemClock
from leadpush.context import AppContext
from leadpush.notify.models import Delivery
from leadpush.wechat.credits import add_credits, credits_of

SHANGHAI = ZoneInfo("Asia/Shanghai")


@dataclass
class World:
    api: Api
    ctx: AppContext
    fake: FakeWeChatServer
    admin: Person
    manager: Person
    alice: Person  # mini program (openid) and WeCom
    dave: Person  # WeCom only

    def leads(self, n: int, **kw: str) -> list[int]:
        return [self.api.lead(self.manager, **kw)["id"] for _ in range(n)]

    def give_credits(self, who: Person, n: int) -> dict:
        body = None
        for _ in range(n):
            r = self.api.client(who).post(
                "/api/wechat/subscriptions", json={"errMsg": "requestSubscribeMessage:ok", TEMPLATE: "accept"}
            )
            assert r.status_code == 200, r.text
            body = r.json()["data"]
        self.fake.state.add_credits("o-alice", TEMPLATE, n)
        return body or {}

    def deliveries(self) -> list[Delivery]:
        with self.ctx.db.read() as session:
            return list(session.scalars(select(Delivery).order_by(Delivery.notification_id, Delivery.id)))

    def settled(self) -> list[Delivery]:
        """Wait until no delivery is pending or being sent; return them all."""
        rows = wait_for(
            lambda: (r := self.deliveries()) and all(d.status not in ("pending", "sending") for d in r) and r
        )
        assert isinstance(rows, list)
        return rows

    def assign_time(self) -> str:
        return self.ctx.clock.now().astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")


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
        dave=api.user("周杰", "sales", "A", wecom_userid="Dave"),
    )


def assign(w: World, endpoint: str, to: Person, ids: list[int]) -> None:
    c = w.api.client(w.manager)
    if endpoint == "web":
        r = c.patch(f"/api/customers/{ids[0]}/assign", json={"assignedTo": to.id})
    elif endpoint == "miniprogram":
        r = c.patch(f"/api/customers/miniprogram/{ids[0]}/assign", json={"assignedTo": to.id})
    elif endpoint == "batch":
        r = c.post("/api/customers/batch-assign", json={"assignedTo": to.id, "customerIds": ids})
    else:
        r = c.post("/api/customers/public-pool/assign", json={"assignedTo": to.id, "customerIds": ids})
    assert r.status_code == 200, r.text


ENDPOINTS = [("web", 1), ("miniprogram", 1), ("batch", 3), ("pool", 2)]


@pytest.mark.parametrize(("endpoint", "n"), ENDPOINTS, ids=[e for e, _ in ENDPOINTS])
def test_assignment_reaches_wechat_as_the_original_template(world: World, endpoint: str, n: int) -> None:
    w = world
    w.give_credits(w.alice, 2)
    ids = w.leads(n, name="张三", phone="138 0013 8000", source="抖音广告")
    assign(w, endpoint, w.alice, ids)
    [message] = wait_for(lambda: w.fake.state.get_messages("subscribe"))
    body = message["body"]
    expected = {
        "touser": "o-alice",
        "template_id": TEMPLATE,
        "miniprogram_state": "formal",
        "lang": "zh_CN",
        "data": {
            "thing1": {"value": "张三" if n == 1 else f"{n}条新线索"},
            "phone_number2": {"value": "13800138000"},
            "thing3": {"value": "抖音广告"},
            "time4": {"value": w.assign_time()},
        },
    }
    if n == 1:
        expected["page"] = f"pages/customer/detail?id={ids[0]}"
    assert body == expected
    rows = w.settled()
    assert sorted((d.channel, d.status) for d in rows) == [("inapp", "sent"), ("wechat", "sent")]
    wechat = next(d for d in rows if d.channel == "wechat")
    assert wechat.provider_id == str(message["msgid"])
    assert w.fake.state.get_messages("wecom") == []  # "wechat|wecom": one of them, never both
    r = w.api.client(w.alice).get("/api/wechat/subscriptions")
    assert r.json()["data"]["credits"] == 1


@pytest.mark.parametrize(("endpoint", "n"), ENDPOINTS, ids=[e for e, _ in ENDPOINTS])
def test_assignment_reaches_wecom_as_a_textcard(world: World, endpoint: str, n: int) -> None:
    w = world
    ids = w.leads(n, name="张三", phone="13800138000", source="抖音广告")
    assign(w, endpoint, w.dave, ids)
    [message] = wait_for(lambda: w.fake.state.get_messages("wecom"))
    when = w.assign_time()
    if n == 1:
        card = {
            "title": "您有一条新线索：张三",
            "description": f"客户：张三\n电话：13800138000\n来源：抖音广告\n分配人：王经理\n时间：{when}",
            "url": f"{PUBLIC_URL}/console/customers/{ids[0]}",
            "btntxt": "查看",
        }
    else:
        card = {
            "title": f"您有 {n} 条新线索",
            "description": f"王经理 分配给您 {n} 条线索\n客户：{'、'.join(['张三'] * n)}\n时间：{when}",
            "url": f"{PUBLIC_URL}/console/customers",
            "btntxt": "查看",
        }
    page, notice = message["body"]["textcard"]["url"].split("?notice=")
    assert page == card["url"] and notice.isdigit()  # the card names its notice (see wecom.card.link)
    card["url"] = message["body"]["textcard"]["url"]
    assert message["body"] == {
        "touser": "Dave",
        "msgtype": "textcard",
        "agentid": AGENTID,
        "textcard": card,
        "enable_duplicate_check": 1,  # a re-send after a crash is shown once
        "duplicate_check_interval": 1800,
    }
    assert message["touser"] == ["dave"]
    rows = w.settled()
    assert sorted((d.channel, d.status) for d in rows) == [("inapp", "sent"), ("wecom", "sent")]


def test_without_credit_wechat_is_skipped_and_wecom_takes_over(world: World) -> None:
    w = world
    w.give_credits(w.alice, 1)
    first, second = w.leads(2)
    assign(w, "web", w.alice, [first])
    wait_for(lambda: w.fake.state.get_messages("subscribe"))
    assign(w, "web", w.alice, [second])
    try:
        [card] = wait_for(lambda: w.fake.state.get_messages("wecom"))
    except AssertionError:
        raise AssertionError(
            [(d.channel, d.status, d.last_error, d.policy, d.next_attempt_at) for d in w.deliveries()],
            w.fake.state.stats(),
        ) from None
    assert card["body"]["textcard"]["url"].startswith(f"{PUBLIC_URL}/console/customers/{second}?notice=")
    rows = w.settled()
    by_note: dict[int, dict[str, Delivery]] = {}
    for d in rows:
        by_note.setdefault(d.notification_id, {})[d.channel] = d
    one, two = (by_note[k] for k in sorted(by_note))
    assert {c: d.status for c, d in one.items()} == {"inapp": "sent", "wechat": "sent"}
    assert {c: d.status for c, d in two.items()} == {"inapp": "sent", "wechat": "skipped", "wecom": "sent"}
    assert "no credit" in (two["wechat"].last_error or "")
    assert len(w.fake.state.get_messages("subscribe")) == 1
    # Never asked WeChat in vain (a 40001 here is only the token cached before the fake was reset).
    assert set(w.fake.state.stats()["rejected_by_kind"].get("subscribe", {})) <= {40001}

    # The policy is visible per delivery in the API.
    r = w.api.client(w.admin).get("/api/deliveries", params={"notificationId": two["wecom"].notification_id})
    items = {i["channel"]: i for i in r.json()["data"]["items"]}
    assert "改用企业微信" in items["wechat"]["policy"] and "只发其一" in items["wechat"]["policy"]
    assert items["wechat"]["status"] == "skipped" and "no credit" in items["wechat"]["lastError"]
    assert items["wecom"]["policy"].startswith("微信小程序未送达")
    assert items["inapp"]["policy"] == "站内通知始终发送"

    # An admin retrying the skipped WeChat delivery (now that there is a credit) must not send both.
    w.give_credits(w.alice, 1)
    r = w.api.client(w.admin).post(f"/api/deliveries/{items['wechat']['id']}/retry")
    assert r.status_code == 200, r.text
    wait_for(lambda: next(d for d in w.deliveries() if d.id == items["wechat"]["id"]).status == "skipped")
    retried = next(d for d in w.settled() if d.id == items["wechat"]["id"])
    assert "已改由企业微信发送" in (retried.last_error or "")
    assert len(w.fake.state.get_messages("subscribe")) == 1


def test_43101_falls_back_to_wecom_and_zeroes_credits(world: World) -> None:
    w = world
    w.give_credits(w.alice, 2)
    w.fake.state.set_credits("o-alice", TEMPLATE, 0)  # the user cancelled in WeChat
    [lead] = w.leads(1)
    assign(w, "web", w.alice, [lead])
    wait_for(lambda: w.fake.state.get_messages("wecom"))
    rows = w.settled()
    assert {d.channel: d.status for d in rows} == {"inapp": "sent", "wechat": "dead", "wecom": "sent"}
    assert w.api.client(w.alice).get("/api/wechat/subscriptions").json()["data"]["credits"] == 0


@pytest.mark.slow  # 31 sends through the pacer
def test_wecom_pacing_folds_the_excess_into_one_digest(world: World) -> None:
    w = world
    ids = w.leads(33)
    for lead in ids:
        assign(w, "web", w.dave, [lead])
    wait_for(lambda: len(w.fake.state.get_messages("wecom")) == 30)
    deferred = wait_for(lambda: [d for d in w.deliveries() if d.channel == "wecom" and d.status == "failed"] or None)
    wait_for(lambda: len([d for d in w.deliveries() if d.channel == "wecom" and d.status == "failed"]) == 3)
    assert all("限速" in (d.last_error or "") for d in deferred)
    w.ctx.clock.advance(seconds=61)
    w.fake.state.advance(61)  # WeCom's own minute passes too
    w.ctx.signals.notifications_committed(set())
    try:
        wait_for(lambda: len(w.fake.state.get_messages("wecom")) == 31)
    except AssertionError:
        raise AssertionError(
            [
                (d.id, d.status, d.attempts, d.last_error, d.next_attempt_at)
                for d in w.deliveries()
                if d.channel == "wecom" and d.status != "sent"
            ],
            w.ctx.clock.now(),
            len(w.fake.state.get_messages("wecom")),
        ) from None
    rows = w.settled()
    wecom = [d for d in rows if d.channel == "wecom"]
    assert [d.status for d in wecom] == ["sent"] * 33
    digest = w.fake.state.get_messages("wecom")[-1]
    assert digest["body"]["textcard"]["title"] == "您有 3 条新线索"
    assert digest["body"]["textcard"]["url"].startswith(f"{PUBLIC_URL}/console/customers?notice=")
    assert len({d.provider_id for d in wecom[-3:]}) == 1
    assert w.fake.state.stats()["wecom_dropped"] == {}  # nothing silently lost at WeCom


def test_a_users_own_claim_is_not_pushed(world: World) -> None:
    w = world
    [lead] = w.leads(1)
    r = w.api.client(w.dave).post(f"/api/customers/{lead}/claim")
    assert r.status_code == 200, r.text
    rows = w.settled()
    assert {d.channel: (d.status, d.policy) for d in rows} == {
        "inapp": ("sent", "站内通知始终发送"),
        "wecom": ("skipped", "本人操作，不推送"),
    }
    assert w.fake.state.get_messages() == []


@pytest.mark.slow  # slow on purpose: each step near its timeout
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_send_accepted_after_a_slow_token_refresh_is_sent_once(kind: str, tmp_path) -> None:
    """The token dies; the send meets 40001, the token is fetched again and the send repeated, each step
    slow but within its own timeout. The whole takes longer than any one request may: WeChat accepts the
    repeated send, and that must be the only message (and the only credit) this delivery costs."""
    send_timeout = 2.0
    with FakeWeChatServer(strict_state()) as fake:
        gen = database_url(kind, str(tmp_path))
        ctx, server = start_stack(
            next(gen),
            clock=SystemClock(),
            **channel_settings(fake.url, wecom_corpid=None, send_timeout=send_timeout, delivery_poll_interval=0.2),
        )
        api = Api(url=server.url, ctx=ctx)
        try:
            manager = api.user("王经理", "manager", "A")
            alice = api.user("李丽", "sales", "A", wechat_openid="o-alice")
            with ctx.db.write() as session:
                add_credits(session, alice.id, [TEMPLATE] * 2, ctx.clock.now())
            fake.state.add_credits("o-alice", TEMPLATE, 3)  # one spare at WeChat: a second send shows
            first, second = (api.lead(manager)["id"] for _ in range(2))
            m = api.client(manager)
            assert m.patch(f"/api/customers/{first}/assign", json={"assignedTo": alice.id}).status_code == 200
            wait_for(lambda: len(fake.state.get_messages("subscribe")) == 1, timeout=30)  # a token is cached

            fake.state.revoke_tokens()
            slow = send_timeout * 0.6  # each step well within its own timeout, together past any one's
            fake.state.add_fault(SUBSCRIBE_PATH, "slow", delay=slow, count=2)
            fake.state.add_fault("/cgi-bin/stable_token", "slow", delay=slow, count=1)
            assert m.patch(f"/api/customers/{second}/assign", json={"assignedTo": alice.id}).status_code == 200

            def wechat_rows() -> list[Delivery]:
                with ctx.db.read() as session:
                    return list(session.scalars(select(Delivery).where(Delivery.channel == "wechat")))

            rows = wait_for(lambda: (r := wechat_rows()) and all(d.status == "sent" for d in r) and r, timeout=30)
            time.sleep(1.0)  # a duplicate, had the send been cut, would be on its way now
            assert [d.attempts for d in rows] == [1, 1], [(d.attempts, d.last_error) for d in wechat_rows()]
            pages = [msg["body"]["page"] for msg in fake.state.get_messages("subscribe")]
            assert sorted(pages) == sorted(f"pages/customer/detail?id={lead}" for lead in (first, second))
            assert fake.state.stats()["rejected_by_kind"]["subscribe"] == {40001: 1}
            with ctx.db.read() as session:
                assert credits_of(session, alice.id) == {TEMPLATE: 0}
            assert fake.state.get_credits("o-alice", TEMPLATE) == 1
        finally:
            api.close()
            server.stop()
            ctx.db.dispose()
            gen.close()
