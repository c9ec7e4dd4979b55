"""The WeCom app-message channel against the fake over real HTTP: textcards, errcodes, tokens."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from leadpush_fakes.wechat import WECOM_SEND_PATH
from support import FakeClock, wipe
from support.channels import AGENTID, CORPID, PUBLIC_URL, FakeWeChatServer, channel_settings, send, strict_state

from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.notify.channels.base import DeliveryJob, Recipient, SendResult
from leadpush.tencent.client import ApiReply
from leadpush.tencent.store import DbStore
from leadpush.tencent.tokens import TokenCache
from leadpush.wecom.channel import WecomChannel, token_fetcher
from leadpush.wecom.pacing import take_slot

LEAD = {
    "customerId": 7,
    "customerName": "张三",
    "customerPhone": "13800138000",
    "source": "抖音广告",
    "assignTime": "2026-11-24T10:01:00+08:00",
    "actorName": "王经理",
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeWeChatServer]:
    """Overrides the shared `fake`: here WeCom knows one member."""
    with FakeWeChatServer(strict_state(wecom_users=["alice"])) as server:
        yield server


@dataclass
class Env:
    ctx: AppContext
    fake: FakeWeChatServer

    def channel(self, **overrides: Any) -> WecomChannel:
        ctx = self.ctx
        if overrides:
            ctx = replace(ctx, settings=ctx.settings.model_copy(update=overrides))
        s = ctx.settings
        client = httpx.AsyncClient(timeout=s.send_timeout)
        fetch = token_fetcher(client, s.wecom_api_base, s.wecom_corpid or "", s.wecom_secret or "")
        tokens = TokenCache(f"wecom:{CORPID}", fetch, DbStore(ctx.db, ctx.clock), ctx.clock, supports_force=False)
        return WecomChannel(ctx, tokens, client)

    def job(self, userid: str = "alice", i: int = 1, **changes: Any) -> DeliveryJob:
        return DeliveryJob(
            delivery_id=i,
            channel="wecom",
            attempts=1,
            lease_until=self.ctx.clock.now() + timedelta(seconds=60),  # as a claim now would
            notification_id=i,
            prev_id=None,
            kind=changes.pop("kind", "customer_assigned"),
            title=changes.pop("title", "您有一条新线索：张三"),
            body=changes.pop("body", ""),
            payload={**LEAD, **changes},
            created_at=datetime(2026, 11, 24, 2, 1, tzinfo=UTC),
            recipient=Recipient(1, "李丽", None, userid),
        )


@pytest.fixture
def env(fake: FakeWeChatServer, channel_db_url: str) -> Iterator[Env]:
    fake.state.reset(full=True)
    ctx = AppContext.from_settings(
        Settings(database_url=channel_db_url, send_timeout=1.0, **channel_settings(fake.url)), clock=FakeClock()
    )
    wipe(ctx)
    yield Env(ctx, fake)
    ctx.db.dispose()


def test_a_textcard_with_a_link_to_the_lead(env: Env) -> None:
    job = env.job()
    [result] = send(env.channel(), job)
    assert result.outcome == "sent"
    [message] = env.fake.state.get_messages("wecom")
    assert result.provider_id == message["msgid"]
    assert message["body"] == {
        "touser": "alice",
        "msgtype": "textcard",
        "agentid": AGENTID,
        "textcard": {
            "title": "您有一条新线索：张三",
            "description": "客户：张三\n电话：13800138000\n来源：抖音广告\n分配人：王经理\n时间：2026-11-24 10:01",
            # The notice it is about: a second notice that reads the same is not hidden as a repeat.
            "url": f"{PUBLIC_URL}/console/customers/7?notice={job.notification_id}",
            "btntxt": "查看",
        },
        "enable_duplicate_check": 1,  # a re-send after a crash is shown once (LEADPUSH_WECOM_DUPLICATE_CHECK_SECONDS)
        "duplicate_check_interval": 1800,
    }


def test_the_body_is_raw_utf8_and_long_text_is_cut_to_the_byte_limits(env: Env) -> None:
    """WeCom refuses \\uXXXX escapes (40033) and titles over 128 bytes / descriptions over 512."""
    [result] = send(
        env.channel(),
        env.job(title="您有一条新线索：" + "😀长" * 80, customerName="长" * 100, source="🔥" * 200),
    )
    assert result.outcome == "sent", result.detail
    card = env.fake.state.get_messages("wecom")[0]["body"]["textcard"]
    assert len(card["title"].encode()) <= 128 and card["title"].endswith("…")
    assert len(card["description"].encode()) <= 512


def test_masked_phones_and_configurable_console_links(env: Env) -> None:
    channel = env.channel(
        wecom_mask_phone=True, public_url="https://crm.example.com/app/", console_customer_path="/#/lead/{customerId}"
    )
    job = env.job()
    [result] = send(channel, job)
    assert result.outcome == "sent"
    card = env.fake.state.get_messages("wecom")[0]["body"]["textcard"]
    assert "电话：138****8000" in card["description"]
    # The notice's id goes before the front end's hash route, which stays as configured.
    assert card["url"] == f"https://crm.example.com/app/?notice={job.notification_id}#/lead/7"


def test_an_invaliduser_is_permanent_for_that_user(env: Env) -> None:
    env.fake.state.add_wecom_users("bob")
    ok, bad = send(env.channel(), env.job("Bob", 1), env.job("ghost", 2))
    assert ok.outcome == "sent"
    assert bad.outcome == "permanent" and "ghost" in bad.detail
    assert env.fake.state.stats()["rejected"] == {81013: 1}


def test_invaliduser_with_errcode_0_is_still_permanent(env: Env) -> None:
    """WeCom answers errcode 0 when only some recipients are invalid; ours being among them is a failure."""
    channel = env.channel()
    reply = ApiReply(data={"errcode": 0, "errmsg": "ok", "invaliduser": "bob|alice", "msgid": "m1"})
    result = channel.classify(reply, "Alice")
    assert result.outcome == "permanent" and "invaliduser" in result.detail
    asyncio.run(channel.aclose())


@pytest.mark.parametrize(
    ("errcode", "words"),
    [(40056, "LEADPUSH_WECOM_AGENTID"), (60020, "可信 IP"), (301002, "其他应用"), (81013, "alice")],
)
def test_configuration_errors_are_permanent(env: Env, errcode: int, words: str) -> None:
    env.fake.state.add_fault(WECOM_SEND_PATH, "errcode", errcode=errcode, count=1)
    [result] = send(env.channel(), env.job())
    assert result.outcome == "permanent"
    assert str(errcode) in result.detail and words in result.detail


def test_a_wrong_agentid_is_caught_by_wecom_for_real(env: Env) -> None:
    [result] = send(env.channel(wecom_agentid=42), env.job())
    assert result.outcome == "permanent" and "40056" in result.detail


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "errcode", "errcode": -1},
        {"kind": "http", "status": 503},
        pytest.param({"kind": "slow", "delay": 1.5}, marks=pytest.mark.slow),  # waits out the send timeout
        {"kind": "drop"},
        {"kind": "errcode", "errcode": 45009},
    ],
    ids=["system-busy", "http-503", "timeout", "dropped-connection", "frequency-45009"],
)
def test_transient_failures_retry(env: Env, fault: dict) -> None:
    env.fake.state.add_fault(WECOM_SEND_PATH, count=1, **fault)
    [result] = send(env.channel(), env.job())
    assert result.outcome == "retry", result.detail
    if fault.get("errcode") == 45009:
        assert result.retry_after == 60
    if fault["kind"] == "slow":
        import time

        time.sleep(fault["delay"] - 0.8)


@pytest.mark.parametrize("how", ["expire", "revoke"])
def test_gettoken_is_refreshed_once_on_a_token_error(env: Env, how: str) -> None:
    channel = env.channel(send_timeout=30.0)  # twenty sends at once: not the 1 s timeout of the timeout tests

    async def run() -> list[SendResult]:
        first = await channel.send(env.job(i=1))
        getattr(env.fake.state, f"{how}_tokens")()
        rest = await asyncio.gather(*(channel.send(env.job(i=i)) for i in range(2, 22)))
        await channel.aclose()
        return [first, *rest]

    assert {r.outcome for r in asyncio.run(run())} == {"sent"}
    assert env.fake.state.stats()["token_requests"] == {"gettoken": 2}


def test_a_wrong_corpsecret_is_permanent(env: Env) -> None:
    [result] = send(env.channel(wecom_secret="nope"), env.job())
    assert result.outcome == "permanent" and "40001" in result.detail and "nope" not in result.detail


def test_the_pacer_allows_thirty_a_minute_per_member(env: Env) -> None:
    now = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    db = env.ctx.db
    slots = [take_slot(db, "Alice", now + timedelta(seconds=i), 30, 1000) for i in range(30)]
    assert all(s.wait == 0 for s in slots)
    over = [take_slot(db, "alice", now + timedelta(seconds=30), 30, 1000) for _ in range(3)]
    assert over[0].leader and not over[1].leader and not over[2].leader
    assert over[0].wait == pytest.approx(30)  # the first of the thirty leaves the window then
    assert over[1].wait > over[0].wait
    assert take_slot(db, "bob", now + timedelta(seconds=30), 30, 1000).wait == 0  # per member
    assert take_slot(db, "alice", now + timedelta(seconds=61), 30, 1000).wait == 0
    with db.read() as session:
        from leadpush.notify.models import KeyValue

        state = json.loads(session.get(KeyValue, "wecom-pace:alice").value)
    assert state["leaderUntil"] is None  # the next send folds whatever was deferred
