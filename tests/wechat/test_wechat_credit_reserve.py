"""The WeChat channel's credit reserve and daily-quota memory, channel-level against the fake over real HTTP
(a real database for credits and the shared marker; the delivery engine around it is tested end to end in
test_wechat_credit_routing.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from leadpush_fakes.wechat import SUBSCRIBE_PATH
from support import FakeClock, wipe
from support.channels import APPID, TEMPLATE, FakeWeChatServer, channel_settings, send

from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.notify.channels.base import DeliveryJob, FoldedNote, Recipient
from leadpush.tencent.store import DbStore
from leadpush.tencent.tokens import TokenCache
from leadpush.users.service import create_user
from leadpush.wechat.channel import NO_CREDIT, WechatChannel, token_fetcher
from leadpush.wechat.credits import add_credits, credits_of, reserve_credit
from leadpush.wechat.quota import mark_exhausted

OPENID = "o-alice-reserve"
LEAD = {"customerId": 42, "customerName": "张三", "customerPhone": "13800138000", "source": "抖音广告"}
KEPT = "订阅次数仅剩 1 次，留给新线索"


@dataclass
class Env:
    ctx: AppContext
    fake: FakeWeChatServer
    user_id: int

    def channel(self, **overrides: Any) -> WechatChannel:
        ctx = self.ctx
        if overrides:
            ctx = replace(ctx, settings=ctx.settings.model_copy(update=overrides))
        s = ctx.settings
        client = httpx.AsyncClient(timeout=s.send_timeout)
        fetch = token_fetcher(client, s.wechat_api_base, APPID, s.wechat_secret or "", s.wechat_token_mode)
        tokens = TokenCache(f"wechat:{APPID}", fetch, DbStore(ctx.db, ctx.clock), ctx.clock, s.token_refresh_margin)
        return WechatChannel(ctx, tokens, client)

    def job(
        self, delivery_id: int, kind: str = "customer_assigned", folded: tuple[FoldedNote, ...] = ()
    ) -> DeliveryJob:
        return DeliveryJob(
            delivery_id=delivery_id,
            channel="wechat",
            attempts=1,
            lease_until=self.ctx.clock.now() + timedelta(seconds=60),
            notification_id=delivery_id,
            prev_id=None,
            kind=kind,
            title="线索「张三」即将被自动流转" if kind == "transfer_warning" else "您有一条新线索：张三",
            body="",
            payload=dict(LEAD),
            created_at=datetime(2026, 11, 24, 2, 1, tzinfo=UTC),
            recipient=Recipient(self.user_id, "李丽", OPENID, None),
            folded=folded,
        )

    def credits(self) -> int:
        with self.ctx.db.read() as session:
            return credits_of(session, self.user_id).get(TEMPLATE, 0)

    def give(self, n: int) -> None:
        with self.ctx.db.write() as session:
            add_credits(session, self.user_id, [TEMPLATE] * n, self.ctx.clock.now())
        self.fake.state.set_credits(OPENID, TEMPLATE, n)

    def calls(self) -> int:
        """Requests that reached WeChat's send endpoint (accepted, refused, or answered by a fault)."""
        stats = self.fake.state.stats()
        return (
            stats["accepted"].get("subscribe", 0)
            + sum(stats["rejected_by_kind"].get("subscribe", {}).values())
            + sum(stats["rejected_by_kind"].get("fault", {}).values())
        )


@pytest.fixture
def env(fake: FakeWeChatServer, channel_db_url: str) -> Iterator[Env]:
    fake.state.reset(full=True)
    clock = FakeClock(datetime(2026, 11, 24, 2, 0, tzinfo=UTC))  # 10:00 in Asia/Shanghai
    ctx = AppContext.from_settings(
        Settings(database_url=channel_db_url, send_timeout=2.0, **channel_settings(fake.url)), clock=clock
    )
    wipe(ctx)
    with ctx.db.write() as session:
        user, _ = create_user(
            session, name="李丽", role="sales", team="A", create_missing_team=True, wechat_openid=OPENID
        )
        user_id = user.id
    yield Env(ctx, fake, user_id)
    ctx.db.dispose()


# ---- the reserve -------------------------------------------------------------------------


def test_a_warning_may_not_take_the_last_credit_but_a_new_lead_may(env: Env) -> None:
    env.give(2)
    [warned] = send(env.channel(), env.job(1, "transfer_warning"))
    assert warned.outcome == "sent"
    assert env.credits() == 1
    [kept] = send(env.channel(), env.job(2, "transfer_warning"))
    assert (kept.outcome, kept.detail) == ("skipped", KEPT)
    assert env.calls() == 1
    [lead] = send(env.channel(), env.job(3, "customer_assigned"))
    assert lead.outcome == "sent"
    assert env.credits() == 0
    [none] = send(env.channel(), env.job(4, "sla_reminder"))
    assert (none.outcome, none.detail) == ("skipped", NO_CREDIT)
    assert env.calls() == 2


def test_racing_warnings_never_take_the_reserved_credit(env: Env) -> None:
    env.give(4)
    results = send(env.channel(), *(env.job(i, "customer_recycled") for i in range(1, 9)))
    assert sorted(r.outcome for r in results) == ["sent"] * 3 + ["skipped"] * 5
    assert {r.detail for r in results if r.outcome == "skipped"} == {KEPT}
    assert env.credits() == 1
    assert len(env.fake.state.get_messages("subscribe")) == 3


def test_a_digest_carrying_a_new_lead_may_take_the_last_credit(env: Env) -> None:
    env.give(1)
    note = FoldedNote(
        7, "customer_assigned", "您有一条新线索：李四", "", dict(LEAD), datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    )
    [result] = send(env.channel(), env.job(1, "transfer_warning", folded=(note,)))
    assert result.outcome == "sent"
    assert env.credits() == 0


def test_a_reserve_of_two_and_of_none(env: Env) -> None:
    env.give(2)
    [kept] = send(env.channel(wechat_credit_reserve=2), env.job(1, "transfer_warning"))
    assert (kept.outcome, kept.detail) == ("skipped", "订阅次数仅剩 2 次，留给新线索")
    [spent] = send(env.channel(wechat_credit_reserve=0), env.job(2, "transfer_warning"))
    assert spent.outcome == "sent"
    [last] = send(env.channel(wechat_credit_reserve=0), env.job(3, "transfer_warning"))
    assert last.outcome == "sent"
    assert env.credits() == 0


# ---- the daily quota -----------------------------------------------------------------------


def test_45009_asks_to_give_way_and_no_worker_calls_wechat_again_before_midnight(env: Env) -> None:
    env.give(3)
    env.fake.state.add_fault(SUBSCRIBE_PATH, "errcode", errcode=45009, count=1)
    [first] = send(env.channel(), env.job(1))
    assert first.outcome == "retry"
    assert first.errcode == 45009
    assert first.give_way == "微信今日调用已达上限（45009）"
    assert first.retry_after is not None and 0 < first.retry_after <= 3600
    assert env.credits() == 3
    assert env.calls() == 1

    # Another channel instance (another worker, same database) does not call WeChat that day.
    env.ctx.clock.advance(hours=13, minutes=59)  # 23:59 local
    [second] = send(env.channel(), env.job(2))
    assert second.outcome == "retry" and second.give_way and second.errcode is None
    assert "今日不再调用" in second.detail
    assert second.retry_after == pytest.approx(65, abs=1)  # just after midnight
    assert env.calls() == 1
    assert env.credits() == 3

    # After the local midnight the quota is fresh: WeChat is called again.
    env.ctx.clock.advance(minutes=1, seconds=1)
    [third] = send(env.channel(), env.job(2))
    assert third.outcome == "sent"
    assert env.calls() == 2
    assert env.credits() == 2


def test_with_the_quota_used_up_a_kept_credit_still_skips_at_once(env: Env) -> None:
    env.give(1)
    env.fake.state.add_fault(SUBSCRIBE_PATH, "errcode", errcode=45009, count=1)
    [first] = send(env.channel(), env.job(1))
    assert first.give_way
    # The credit given back after the 45009 is kept for a new lead: the warning skips now (WeCom takes
    # over), it does not wait for midnight.
    [warning] = send(env.channel(), env.job(2, "transfer_warning"))
    assert (warning.outcome, warning.detail) == ("skipped", KEPT)
    assert env.calls() == 1
    assert env.credits() == 1


def test_a_credit_reserved_by_a_crashed_attempt_goes_back_when_the_quota_is_used_up(env: Env) -> None:
    env.give(2)
    with_reservation = env.job(5)
    assert reserve_credit(env.ctx.db, env.user_id, TEMPLATE, 5, env.ctx.clock.now())  # then the worker died
    assert env.credits() == 1
    mark_exhausted(env.ctx.db, APPID, env.ctx.clock.now(), env.ctx.settings.tz)
    [result] = send(env.channel(), with_reservation)
    assert result.outcome == "retry" and result.give_way
    assert env.credits() == 2
    assert env.calls() == 0
