"""The WeChat subscribe-message channel against the fake over real HTTP: bodies, credits, every errcode.

Channel-level: a real database (for credits and the shared token cache) and the real channel class,
sending to the fake WeChat on a loopback port; the delivery engine around it is tested elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from leadpush_fakes.wechat import SUBSCRIBE_PATH, check_data_value, data_type_of
from support import REDIS_URL, FakeClock, wipe
from support.channels import APPID, SECRET, TEMPLATE, FakeWeChatServer, channel_settings, send

from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.notify.channels.base import DeliveryJob, Recipient, SendResult
from leadpush.tencent.store import DbStore, RedisStore, SharedStore
from leadpush.tencent.tokens import TokenCache
from leadpush.users.service import create_user
from leadpush.wechat.channel import WechatChannel, token_fetcher
from leadpush.wechat.credits import add_credits, credits_of

OPENID = "o-alice-mini"
LEAD = {
    "customerId": 42,
    "customerName": "张三",
    "customerPhone": "13800138000",
    "source": "抖音广告",
    "assignTime": "2026-11-24T10:01:00+08:00",
    "actorName": "王经理",
}


# Fifty sends at once on a loaded machine can take longer than the env's 1 s send timeout (meant for the timeout
# tests): a send that timed out is a "retry", which is not what the concurrent tests look at.
CONCURRENT_TIMEOUT = 30.0


@dataclass
class Env:
    ctx: AppContext
    fake: FakeWeChatServer
    user_id: int

    def channel(self, store: SharedStore | None = None, **overrides: Any) -> WechatChannel:
        ctx = self.ctx
        if overrides:
            ctx = replace(ctx, settings=ctx.settings.model_copy(update=overrides))
        s = ctx.settings
        client = httpx.AsyncClient(timeout=s.send_timeout)
        fetch = token_fetcher(client, s.wechat_api_base, APPID, s.wechat_secret or "", s.wechat_token_mode)
        tokens = TokenCache(
            f"wechat:{APPID}", fetch, store or DbStore(ctx.db, ctx.clock), ctx.clock, s.token_refresh_margin
        )
        return WechatChannel(ctx, tokens, client)

    def job(self, delivery_id: int = 1, kind: str = "customer_assigned", payload: dict | None = None) -> DeliveryJob:
        return DeliveryJob(
            delivery_id=delivery_id,
            channel="wechat",
            attempts=1,
            lease_until=self.ctx.clock.now() + timedelta(seconds=60),  # as a claim now would
            notification_id=delivery_id,
            prev_id=None,
            kind=kind,
            title="您有一条新线索：张三",
            body="",
            payload=payload if payload is not None else dict(LEAD),
            created_at=datetime(2026, 11, 24, 2, 1, tzinfo=UTC),
            recipient=Recipient(self.user_id, "李丽", OPENID, None),
        )

    def credits(self) -> int:
        with self.ctx.db.read() as session:
            return credits_of(session, self.user_id).get(TEMPLATE, 0)

    def give(self, local: int, remote: int | None = None) -> None:
        with self.ctx.db.write() as session:
            add_credits(session, self.user_id, [TEMPLATE] * local, datetime.now(UTC))
        self.fake.state.set_credits(OPENID, TEMPLATE, local if remote is None else remote)

    def subscribe_requests(self) -> int:
        stats = self.fake.state.stats()
        return stats["accepted"].get("subscribe", 0) + sum(stats["rejected_by_kind"].get("subscribe", {}).values())


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
        user_id = user.id
    yield Env(ctx, fake, user_id)
    ctx.db.dispose()


# ---- the message ---------------------------------------------------------------------


def test_an_assignment_becomes_exactly_the_original_template(env: Env) -> None:
    env.give(2)
    [result] = send(env.channel(), env.job())
    assert result.outcome == "sent"
    [message] = env.fake.state.get_messages("subscribe")
    assert result.provider_id == str(message["msgid"])
    assert message["body"] == {
        "touser": OPENID,
        "template_id": TEMPLATE,
        "page": "pages/customer/detail?id=42",
        "miniprogram_state": "formal",
        "lang": "zh_CN",
        "data": {
            "thing1": {"value": "张三"},
            "phone_number2": {"value": "13800138000"},
            "thing3": {"value": "抖音广告"},
            "time4": {"value": "2026-11-24 10:01"},
        },
    }
    assert env.credits() == 1
    assert env.fake.state.get_credits(OPENID, TEMPLATE) == 1


def test_a_digest_is_one_message_counting_the_leads(env: Env) -> None:
    env.give(1)
    payload = {
        "count": 3,
        "customerIds": [1, 2, 3],
        "customers": [dict(LEAD, customerId=i, source=s) for i, s in ((1, "抖音"), (2, "抖音"), (3, "百度"))],
        "assignTime": "2026-11-24T10:01:00+08:00",
    }
    [result] = send(env.channel(), env.job(kind="customers_assigned", payload=payload))
    assert result.outcome == "sent"
    [message] = env.fake.state.get_messages("subscribe")
    assert "page" not in message["body"]  # the mini program's home page by default
    assert message["body"]["data"]["thing1"] == {"value": "3条新线索"}
    assert message["body"]["data"]["thing3"] == {"value": "抖音、百度"}


def test_field_map_page_and_masking_are_configurable(env: Env) -> None:
    env.give(1)
    channel = env.channel(
        wechat_field_map={"thing7": "customerName", "phone_number9": "customerPhone", "thing2": "actorName"},
        wechat_page="pages/lead/view?cid={customerId}&from=push",
        wechat_mask_phone=True,
        wechat_miniprogram_state="trial",
    )
    [result] = send(channel, env.job())
    assert result.outcome == "sent"
    body = env.fake.state.get_messages("subscribe")[0]["body"]
    assert body["page"] == "pages/lead/view?cid=42&from=push"
    assert body["miniprogram_state"] == "trial"
    assert body["data"] == {
        "thing7": {"value": "张三"},
        "phone_number9": {"value": "138****8000"},
        "thing2": {"value": "王经理"},
    }


HOSTILE = [
    ("emoji", {"customerName": "😀王五🎉" * 8, "source": "👨‍👩‍👧小红书🔥"}),
    ("100-character name", {"customerName": "长" * 100}),
    ("empty source", {"source": ""}),
    ("blank source", {"source": "   \n\t "}),
    ("phone with spaces and letters", {"customerPhone": "138 0013 8000 ext. abc"}),
    ("phone that is all letters", {"customerPhone": "unknown"}),
    # Symbols push it past 17 characters: they go, every digit stays. (More than 17 digits is refused:
    # tests/wechat/test_phone_too_long.py.)
    ("long phone with symbols", {"customerPhone": "+86 (0766) 6688-8866"}),
    ("control characters", {"customerName": "张\x00三\x1b[31m", "source": "\u200b\u202e"}),
    ("missing fields", {"customerName": None, "customerPhone": None, "source": None, "assignTime": None}),
]


@pytest.mark.parametrize("mask", [False, True], ids=["plain", "masked"])
@pytest.mark.parametrize(("case", "changes"), HOSTILE, ids=[c for c, _ in HOSTILE])
def test_hostile_values_are_accepted_by_wechat(env: Env, case: str, changes: dict, mask: bool) -> None:
    env.give(1)
    [result] = send(env.channel(wechat_mask_phone=mask), env.job(payload={**LEAD, **changes}))
    assert result.outcome == "sent", result.detail
    data = env.fake.state.get_messages("subscribe")[0]["body"]["data"]
    for key, item in data.items():
        assert item["value"].strip(), key
        assert check_data_value(data_type_of(key), item["value"]), (key, item)
    if case == "100-character name":
        assert data["thing1"]["value"] == "长" * 19 + "…"
    if case == "phone with spaces and letters":
        assert data["phone_number2"]["value"] == ("138****8000" if mask else "13800138000")


# ---- credits ---------------------------------------------------------------------------


def test_no_credit_is_skipped_without_calling_wechat(env: Env) -> None:
    env.fake.state.set_credits(OPENID, TEMPLATE, 5)  # WeChat would accept, but we know of no accept
    [result] = send(env.channel(), env.job())
    assert result.outcome == "skipped"
    assert "no credit" in result.detail
    assert env.subscribe_requests() == 0
    assert env.fake.state.stats()["token_requests"] == {}


def test_43101_sets_credits_to_zero_and_is_permanent(env: Env) -> None:
    env.give(3, remote=0)  # e.g. the user cancelled the subscription in WeChat's settings
    [result] = send(env.channel(), env.job())
    assert result.outcome == "permanent"
    assert "43101" in result.detail
    assert env.credits() == 0


def test_concurrent_sends_never_spend_a_credit_twice(env: Env) -> None:
    env.give(3, remote=10)
    results = send(env.channel(), *(env.job(i) for i in range(1, 11)))
    assert sorted(r.outcome for r in results) == ["sent"] * 3 + ["skipped"] * 7
    assert env.credits() == 0
    assert len(env.fake.state.get_messages("subscribe")) == 3


def test_a_failed_send_gives_the_credit_back(env: Env) -> None:
    env.give(1)
    env.fake.state.add_fault(SUBSCRIBE_PATH, "errcode", errcode=-1, count=1)
    [result] = send(env.channel(), env.job())
    assert result.outcome == "retry"
    assert env.credits() == 1
    [result] = send(env.channel(), env.job())
    assert result.outcome == "sent"
    assert env.credits() == 0


def test_a_retried_delivery_reuses_its_reservation(env: Env) -> None:
    """A worker that died mid-send left the credit reserved; the retry must not take a second one."""
    from leadpush.wechat.credits import reserve_credit

    env.give(2)
    assert reserve_credit(env.ctx.db, env.user_id, TEMPLATE, 1, datetime.now(UTC))
    assert env.credits() == 1
    [result] = send(env.channel(), env.job(1))
    assert result.outcome == "sent"
    assert env.credits() == 1


# ---- errcodes ------------------------------------------------------------------------


def test_40003_invalid_openid_is_permanent(env: Env) -> None:
    env.give(1)
    job = env.job()
    job = replace(job, recipient=replace(job.recipient, wechat_openid="oOA-official-account-openid"))
    [result] = send(env.channel(), job)
    assert result.outcome == "permanent"
    assert "40003" in result.detail and "openid" in result.detail
    assert env.credits() == 1


def test_40037_invalid_template_is_permanent(env: Env) -> None:
    with env.ctx.db.write() as session:
        add_credits(session, env.user_id, ["TPL-typo"], datetime.now(UTC))
    [result] = send(env.channel(wechat_template_id="TPL-typo"), env.job())
    assert result.outcome == "permanent"
    assert "40037" in result.detail and "LEADPUSH_WECHAT_TEMPLATE_ID" in result.detail


def test_41030_unreleased_page_is_permanent(env: Env) -> None:
    env.give(1)
    env.fake.state.configure(allowed_pages=["pages/index"])
    [result] = send(env.channel(), env.job())
    assert result.outcome == "permanent"
    assert "41030" in result.detail and "LEADPUSH_WECHAT_PAGE" in result.detail


def test_47003_names_the_field(env: Env) -> None:
    env.give(1)
    env.fake.state.add_fault(
        SUBSCRIBE_PATH, "errcode", errcode=47003, errmsg="argument invalid! data.thing3.value invalid"
    )
    [result] = send(env.channel(), env.job())
    assert result.outcome == "permanent"
    assert "47003" in result.detail and "data.thing3.value" in result.detail


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "errcode", "errcode": -1},
        {"kind": "http", "status": 502},
        {"kind": "http", "status": 500},
        pytest.param({"kind": "slow", "delay": 1.5}, marks=pytest.mark.slow),  # waits out the send timeout
        {"kind": "drop"},
    ],
    ids=["system-busy", "http-502", "http-500", "timeout", "dropped-connection"],
)
def test_transient_failures_retry(env: Env, fault: dict) -> None:
    env.give(1)
    env.fake.state.add_fault(SUBSCRIBE_PATH, count=1, **fault)
    [result] = send(env.channel(), env.job())
    assert result.outcome == "retry", result.detail
    assert result.retry_after is None
    assert env.credits() == 1
    if fault["kind"] == "slow":  # let the fake finish the abandoned request before the next test resets it
        time.sleep(fault["delay"] - 0.8)


def test_45009_daily_quota_retries_later(env: Env) -> None:
    env.give(1)
    env.fake.state.add_fault(SUBSCRIBE_PATH, "errcode", errcode=45009, count=1)
    [result] = send(env.channel(), env.job())
    assert result.outcome == "retry"
    assert result.retry_after is not None and 0 < result.retry_after <= 3600
    assert env.credits() == 1


def test_45009_waits_only_until_the_quota_resets_at_midnight(env: Env) -> None:
    env.ctx.clock.set(datetime(2026, 11, 24, 15, 50, tzinfo=UTC))  # 23:50 in Asia/Shanghai
    env.give(1)
    env.fake.state.add_fault(SUBSCRIBE_PATH, "errcode", errcode=45009, count=1)
    [result] = send(env.channel(), env.job())
    assert result.retry_after == pytest.approx(605, abs=1)


def test_wrong_secret_is_permanent(env: Env) -> None:
    env.give(1)
    [result] = send(env.channel(wechat_secret="not-the-secret"), env.job())
    assert result.outcome == "permanent"
    assert "40125" in result.detail
    assert SECRET not in result.detail and "not-the-secret" not in result.detail
    assert env.credits() == 1


# ---- access tokens -----------------------------------------------------------------


@pytest.mark.parametrize("how", ["expire", "revoke"], ids=["42001-expired", "40001-invalid"])
def test_a_rejected_token_is_refreshed_once_and_the_send_retried(env: Env, how: str) -> None:
    env.give(2)
    channel = env.channel()

    async def run() -> list[SendResult]:
        first = await channel.send(env.job(1))
        getattr(env.fake.state, f"{how}_tokens")()
        second = await channel.send(env.job(2))
        await channel.aclose()
        return [first, second]

    assert [r.outcome for r in asyncio.run(run())] == ["sent", "sent"]
    stats = env.fake.state.stats()
    assert stats["token_requests"] == {"stable_token": 2}
    assert stats["rejected"] == {42001 if how == "expire" else 40001: 1}


def test_a_token_that_stays_rejected_is_not_refreshed_in_a_loop(env: Env) -> None:
    env.give(1)
    env.fake.state.add_fault(SUBSCRIBE_PATH, "errcode", errcode=40001)
    [result] = send(env.channel(), env.job())
    assert result.outcome == "retry"
    assert env.fake.state.stats()["faults_fired"] == {"errcode": 2}  # the send and its one retry
    assert env.credits() == 1


@pytest.mark.slow  # several processes / many concurrent sends / a slow fault
def test_fifty_concurrent_sends_with_an_expired_token_refresh_it_once(env: Env) -> None:
    env.give(51)
    channel = env.channel(send_timeout=CONCURRENT_TIMEOUT)

    async def run() -> list[SendResult]:
        await channel.send(env.job(1000))
        env.fake.state.expire_tokens()
        results = await asyncio.gather(*(channel.send(env.job(i)) for i in range(1, 51)))
        await channel.aclose()
        return list(results)

    assert [r.outcome for r in asyncio.run(run())] == ["sent"] * 50
    stats = env.fake.state.stats()
    assert stats["token_requests"] == {"stable_token": 2}  # the first fetch, and one refresh
    assert stats["tokens_issued"] == {"stable_token": 2}
    assert stats["rejected"] == {42001: 50}
    assert stats["accepted"]["subscribe"] == 51


def _two_processes(env: Env, make_store: Any) -> None:
    env.give(60)
    one = env.channel(make_store(), send_timeout=CONCURRENT_TIMEOUT)
    two = env.channel(make_store(), send_timeout=CONCURRENT_TIMEOUT)

    async def run() -> list[SendResult]:
        await one.send(env.job(1000))
        await two.send(env.job(1001))  # finds the first process's token in the shared store
        env.fake.state.expire_tokens()
        jobs = [(one if i % 2 else two).send(env.job(i)) for i in range(1, 51)]
        results = await asyncio.gather(*jobs)
        await one.aclose()
        await two.aclose()
        return list(results)

    assert [r.outcome for r in asyncio.run(run())] == ["sent"] * 50
    assert env.fake.state.stats()["token_requests"] == {"stable_token": 2}


@pytest.mark.slow  # several processes / many concurrent sends / a slow fault
def test_two_processes_share_the_token_through_the_database(env: Env) -> None:
    _two_processes(env, lambda: DbStore(env.ctx.db, env.ctx.clock))


@pytest.mark.slow  # several processes / many concurrent sends / a slow fault
def test_two_processes_share_the_token_through_redis(env: Env) -> None:
    prefix = f"leadpush-test-{uuid.uuid4().hex[:8]}:"
    try:
        import redis

        redis.from_url(REDIS_URL).ping()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"Redis not reachable: {exc}")
    _two_processes(env, lambda: RedisStore(REDIS_URL, env.ctx.clock, prefix))


def test_the_token_is_refreshed_a_little_before_it_expires(env: Env) -> None:
    env.give(3)
    channel = env.channel()

    async def run() -> None:
        await channel.send(env.job(1))
        await channel.send(env.job(2))  # cached: no new fetch
        env.ctx.clock.advance(seconds=7200 - 200)  # inside the 300 s margin
        env.fake.state.advance(7200 - 200)  # WeChat rotates 5 minutes before expiry too
        await channel.send(env.job(3))
        await channel.aclose()

    asyncio.run(run())
    stats = env.fake.state.stats()
    assert stats["token_requests"] == {"stable_token": 2}
    assert stats["rejected"] == {}  # refreshed before any send was refused


def test_legacy_token_mode_uses_cgi_bin_token(env: Env) -> None:
    env.give(1)
    [result] = send(env.channel(wechat_token_mode="legacy"), env.job())
    assert result.outcome == "sent"
    assert env.fake.state.stats()["token_requests"] == {"token": 1}


def test_tokens_and_secrets_never_reach_the_logs(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.give(2)
    channel = env.channel()
    with caplog.at_level(logging.DEBUG):

        async def run() -> None:
            await channel.send(env.job(1))
            env.fake.state.revoke_tokens()
            await channel.send(env.job(2))
            await channel.aclose()

        asyncio.run(run())
    tokens = [t["token"] for t in env.fake.state.list_tokens()]
    assert tokens
    text = caplog.text
    assert "access_token=***" in text  # httpx did log the request line, scrubbed
    for secret in [*tokens, SECRET]:
        assert secret not in text
