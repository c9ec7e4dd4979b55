"""A phone number too long for WeChat's phone_number value (at most 17 digits or symbols) is refused with
a clear reason, never cut into another number; no credit is spent, and the chain's WeCom takes over."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from leadpush_fakes.wechat import check_data_value
from sqlalchemy import select
from support import FakeClock, wait_for, wipe
from support.api import Api, ok
from support.channels import APPID, TEMPLATE, FakeWeChatServer, channel_settings, send, strict_state

from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.notify.channels.base import DeliveryJob, Recipient
from leadpush.notify.models import Delivery, KeyValue
from leadpush.tencent.store import DbStore
from leadpush.tencent.tokens import TokenCache
from leadpush.users.service import create_user
from leadpush.wechat.channel import WechatChannel, token_fetcher
from leadpush.wechat.credits import add_credits, credits_of

OPENID = "o-long-phone"
REASON = "电话号码超过 17 位，无法填入订阅消息的 phone_number 字段："
EIGHTEEN = "+86 0755 6688 8866 1234"  # 18 digits: cut to 17 it would be another number
LEAD = {
    "customerId": 42,
    "customerName": "张三",
    "source": "抖音广告",
    "assignTime": "2026-11-24T10:01:00+08:00",
    "actorName": "王经理",
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeWeChatServer]:
    with FakeWeChatServer(strict_state()) as server:
        yield server


class Env:
    def __init__(self, ctx: AppContext, fake: FakeWeChatServer, user_id: int) -> None:
        self.ctx, self.fake, self.user_id = ctx, fake, user_id

    def channel(self, mask: bool = False) -> WechatChannel:
        s = self.ctx.settings.model_copy(update={"wechat_mask_phone": mask})
        ctx = AppContext(**{**self.ctx.__dict__, "settings": s})
        client = httpx.AsyncClient(timeout=s.send_timeout)
        fetch = token_fetcher(client, s.wechat_api_base, APPID, s.wechat_secret or "", s.wechat_token_mode)
        tokens = TokenCache(f"wechat:{APPID}", fetch, DbStore(ctx.db, ctx.clock), ctx.clock, s.token_refresh_margin)
        return WechatChannel(ctx, tokens, client)

    def job(self, phone: str) -> DeliveryJob:
        return DeliveryJob(
            delivery_id=1,
            channel="wechat",
            attempts=1,
            lease_until=self.ctx.clock.now() + timedelta(seconds=60),
            notification_id=1,
            prev_id=None,
            kind="customer_assigned",
            title="您有一条新线索：张三",
            body="",
            payload={**LEAD, "customerPhone": phone},
            created_at=datetime(2026, 11, 24, 2, 1, tzinfo=UTC),
            recipient=Recipient(self.user_id, "李丽", OPENID, None),
        )

    def credits(self) -> int:
        with self.ctx.db.read() as session:
            return credits_of(session, self.user_id).get(TEMPLATE, 0)

    def reserved(self) -> int:
        """Credits held for a send in flight (reserved, not yet settled: a marker row per delivery)."""
        with self.ctx.db.read() as session:
            return len(session.scalars(select(KeyValue).where(KeyValue.key.like("wechat-credit:%"))).all())


@pytest.fixture
def env(fake: FakeWeChatServer, channel_db_url: str) -> Iterator[Env]:
    fake.state.reset(full=True)
    ctx = AppContext.from_settings(
        Settings(database_url=channel_db_url, send_timeout=1.0, **channel_settings(fake.url)), clock=FakeClock()
    )
    wipe(ctx)
    with ctx.db.write() as session:
        user, _ = create_user(
            session, name="李丽", role="sales", team="A", create_missing_team=True, wechat_openid=OPENID
        )
        add_credits(session, user.id, [TEMPLATE], datetime.now(UTC))
        user_id = user.id
    fake.state.set_credits(OPENID, TEMPLATE, 1)
    yield Env(ctx, fake, user_id)
    ctx.db.dispose()


def test_a_number_of_more_than_17_digits_is_refused_before_a_credit_is_taken(env: Env) -> None:
    [result] = send(env.channel(), env.job(EIGHTEEN))
    assert result.outcome == "permanent"
    assert result.detail.startswith(REASON) and EIGHTEEN in result.detail and "18 位数字" in result.detail
    assert env.credits() == 1 and env.reserved() == 0  # nothing reserved, nothing spent
    stats = env.fake.state.stats()
    assert stats["accepted"].get("subscribe", 0) == 0 and not stats["rejected_by_kind"].get("subscribe")
    assert stats["token_requests"] == {}  # WeChat was not even asked for a token


@pytest.mark.parametrize(
    ("phone", "value"),
    [
        ("+86-0766-66888866", "+86-0766-66888866"),  # 17 digits and symbols: as it is
        ("+86 (0755) 6688-8866", "86075566888866"),  # symbols dropped to fit, digits kept
        ("86075566888866123", "86075566888866123"),  # exactly 17 digits
    ],
)
def test_a_number_that_fits_is_sent_with_every_digit(env: Env, phone: str, value: str) -> None:
    [result] = send(env.channel(), env.job(phone))
    assert result.outcome == "sent", result.detail
    [message] = env.fake.state.get_messages("subscribe")
    assert message["body"]["data"]["phone_number2"]["value"] == value
    assert env.credits() == 0


def test_masked_a_long_number_still_fits(env: Env) -> None:
    [result] = send(env.channel(mask=True), env.job(EIGHTEEN))
    assert result.outcome == "sent", result.detail
    value = env.fake.state.get_messages("subscribe")[0]["body"]["data"]["phone_number2"]["value"]
    assert value == "860**********1234"
    assert len(value) == 17 and check_data_value("phone_number", value)


# ---- end to end: the chain's WeCom takes over ------------------------------------------------


def test_an_assignment_with_a_too_long_number_reaches_the_member_on_wecom(pushing: Api, fake: FakeWeChatServer):
    api = pushing
    admin = api.user("管理员", "admin", None)
    manager = api.user("王经理", "manager", "A")
    alice = api.user("李丽", "sales", "A", wechat_openid=OPENID, wecom_userid="alice")
    with api.ctx.db.write() as s:
        add_credits(s, alice.id, [TEMPLATE], api.ctx.clock.now())
    fake.state.set_credits(OPENID, TEMPLATE, 1)
    lead = api.lead(manager, name="张三", phone=EIGHTEEN)
    moved = ok(api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": alice.id}))
    # The legacy notificationData for old pages has nothing to send either (rather than a wrong number).
    assert moved["notificationData"]["data"] is None

    def by_channel() -> dict[str, dict]:
        items = ok(api.client(admin).get("/api/deliveries"))["items"]
        return {d["channel"]: d for d in items}

    rows = wait_for(lambda: (r := by_channel()).get("wecom", {}).get("status") == "sent" and r)
    wechat = rows["wechat"]
    assert wechat["status"] == "dead" and wechat["lastError"].startswith(REASON)
    [card] = fake.state.get_messages("wecom")
    assert "电话：+860755668888661234" in card["body"]["textcard"]["description"]  # the whole number
    assert fake.state.get_messages("subscribe") == []
    with api.ctx.db.read() as s:
        assert credits_of(s, alice.id).get(TEMPLATE, 0) == 1  # the credit is still there
        wecom = s.scalars(select(Delivery).where(Delivery.channel == "wecom")).one()
    assert "改用企业微信" in (wecom.policy or "")
    tries = ok(api.client(admin).get(f"/api/deliveries/{wechat['id']}"))["attempts"]
    assert [(t["outcome"], t["status"], t["errcode"]) for t in tries] == [("permanent", "dead", None)]
