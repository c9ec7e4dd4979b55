"""leadpush's WeChat access token within the platform's limits, against the fake over real HTTP.

The fake refuses what WeChat refuses (force_refresh more than 20 a day or within 30 s: 45009 / 45011;
a legacy token 5 minutes after a newer one: 40001). leadpush must never get there by itself: at most
one refresh past a rejected token per 30 s across every process sharing the token (the database's
`kv` table on SQLite, Redis with PostgreSQL, as deployed), at most 20 forced a day, and on the legacy
endpoint a refresh under the shared lock so that servers do not invalidate each other's token.

Both clocks (leadpush's and the fake's) are moved by hand, together.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from leadpush_fakes.wechat import SUBSCRIBE_PATH
from support import DATABASES, REDIS_URL, FakeClock, postgres_database, require_redis, wipe
from support.channels import APPID, TEMPLATE, FakeWeChatServer, channel_settings

from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.migrate import upgrade
from leadpush.notify.channels.base import DeliveryJob, Recipient, SendResult
from leadpush.users.service import create_user
from leadpush.wechat.channel import WechatChannel, build_channel
from leadpush.wechat.credits import add_credits

OPENID = "o-token-limits"
LEAD = {"customerId": 42, "customerName": "张三", "customerPhone": "13800138000", "source": "抖音广告"}


@pytest.fixture(scope="module", params=DATABASES)
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('tokens')}/tokens.db"
        upgrade(url)
        yield url
    else:
        require_redis(REDIS_URL)
        with postgres_database() as url:
            upgrade(url)
            yield url


@dataclass
class Env:
    ctx: AppContext
    fake: FakeWeChatServer
    user_id: int
    redis_prefix: str | None  # PostgreSQL deployments share tokens through Redis; SQLite ones through `kv`
    seq: int = 0

    def process(self, mode: str = "stable") -> WechatChannel:
        """The WeChat channel of one leadpush process (its own memory, the deployment's shared store),
        built as leadpush builds it."""
        update: dict[str, Any] = {"wechat_token_mode": mode}
        if self.redis_prefix is not None:
            update |= {"redis_url": REDIS_URL, "redis_prefix": self.redis_prefix}
        channel = build_channel(replace(self.ctx, settings=self.ctx.settings.model_copy(update=update)))
        assert channel is not None
        return channel

    def job(self) -> DeliveryJob:
        self.seq += 1
        return DeliveryJob(
            delivery_id=self.seq,
            channel="wechat",
            attempts=1,
            lease_until=self.ctx.clock.now() + timedelta(seconds=60),
            notification_id=self.seq,
            prev_id=None,
            kind="customer_assigned",
            title="您有一条新线索：张三",
            body="",
            payload=dict(LEAD),
            created_at=datetime(2026, 11, 24, 2, 1, tzinfo=UTC),
            recipient=Recipient(self.user_id, "李丽", OPENID, None),
        )

    def advance(self, seconds: float) -> None:
        self.ctx.clock.advance(seconds=seconds)  # type: ignore[attr-defined]
        self.fake.state.advance(seconds)

    def storm(self) -> None:
        """Every subscribe/send answers 40001, whatever the token (until cleared)."""
        self.fake.state.add_fault(SUBSCRIBE_PATH, "errcode", errcode=40001)

    def forced(self) -> int:
        return len(self.fake.state.force_refreshes)

    def token_rejections(self) -> dict[Any, int]:
        return dict(self.fake.state.stats()["rejected_by_kind"].get("token", {}))


# One event loop per test (the channels' HTTP and Redis clients live on it), as in a leadpush process.
LOOP: dict[str, asyncio.AbstractEventLoop] = {}


def send(*pairs: tuple[WechatChannel, DeliveryJob]) -> list[SendResult]:
    """Send concurrently, as the dispatcher would."""

    async def run() -> list[SendResult]:
        return list(await asyncio.gather(*(channel.send(job) for channel, job in pairs)))

    return LOOP["loop"].run_until_complete(run())


def close(*channels: WechatChannel) -> None:
    async def run() -> None:
        for channel in channels:
            await channel.aclose()

    LOOP["loop"].run_until_complete(run())


@pytest.fixture
def env(fake: FakeWeChatServer, db_url: str) -> Iterator[Env]:
    fake.state.reset(full=True)
    # Start early in a Beijing day, so that moving the clocks by minutes never crosses WeChat's midnight.
    start = datetime.now(UTC).replace(hour=17, minute=0, second=0, microsecond=0)  # 01:00 in Beijing
    fake.state.advance(start.timestamp() - fake.state.now())
    ctx = AppContext.from_settings(
        Settings(database_url=db_url, send_timeout=5.0, **channel_settings(fake.url)), clock=FakeClock(start)
    )
    wipe(ctx)
    with ctx.db.write() as session:
        user, _ = create_user(
            session, name="李丽", role="sales", team="A", create_missing_team=True, wechat_openid=OPENID
        )
        user_id = user.id
        add_credits(session, user_id, [TEMPLATE] * 1000, datetime.now(UTC))
    fake.state.set_credits(OPENID, TEMPLATE, 1000)
    prefix = None if ctx.db.url.startswith("sqlite") else f"leadpush-test-{uuid.uuid4().hex[:8]}"
    LOOP["loop"] = asyncio.new_event_loop()
    yield Env(ctx, fake, user_id, prefix)
    LOOP.pop("loop").close()
    fake.state.clear_faults()
    ctx.db.dispose()
    if prefix is not None:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


# ---- stable_token: force_refresh ---------------------------------------------------------------


def test_a_40001_storm_forces_at_most_one_refresh_per_30_seconds(env: Env) -> None:
    one = env.process()
    assert [r.outcome for r in send((one, env.job()))] == ["sent"]
    env.storm()
    first = send(*((one, env.job()) for _ in range(10)))
    assert {r.outcome for r in first} == {"retry"}
    assert env.forced() == 1  # the first 40001 forced one refresh; the other nine did not
    for _ in range(5):
        env.advance(5)
        [result] = send((one, env.job()))
        assert result.outcome == "retry" and "距上次强制刷新不足 30 秒" in result.detail
    assert env.forced() == 1  # 25 s later: still one
    env.advance(6)
    send((one, env.job()), (one, env.job()))
    assert env.forced() == 2  # 31 s after the first: one more
    assert env.token_rejections() == {}  # WeChat never had to refuse leadpush
    env.fake.state.clear_faults()
    env.advance(1)
    assert send((one, env.job()))[0].outcome == "sent"  # the storm is over: the current token works
    close(one)


def test_processes_sharing_the_token_share_the_30_seconds(env: Env) -> None:
    one, two = env.process(), env.process()
    send((one, env.job()), (two, env.job()))
    env.storm()
    for _ in range(3):
        results = send(*((one if i % 2 else two, env.job()) for i in range(10)))
        assert {r.outcome for r in results} == {"retry"}
        env.advance(10)
    assert env.forced() == 1  # 30 s of storm on two processes: one forced refresh
    env.advance(1)
    send((two, env.job()), (one, env.job()))
    assert env.forced() == 2
    assert env.token_rejections() == {}
    close(one, two)


def test_at_most_20_forced_refreshes_a_day_then_a_normal_fetch_and_a_clear_reason(env: Env) -> None:
    one, two = env.process(), env.process()
    send((one, env.job()))
    env.storm()
    for _ in range(22):
        send((one, env.job()))
        env.advance(31)
    assert env.forced() == 20
    send((two, env.job()))  # `two` first moves on to the shared newest token (refused too)...
    [result] = send((two, env.job()))  # ...then may not force past it either: the count is shared
    assert result.outcome == "retry"
    assert "今日强制刷新已达 20 次" in result.detail and "北京时间零点后恢复" in result.detail
    assert env.token_rejections() == {}  # WeChat never answered 45009: leadpush stopped by itself
    normal = env.fake.state.stats()["token_requests"]["stable_token"]
    send((one, env.job()), (one, env.job()))
    # Within the day, a process that was told no does not ask WeChat again for the same token.
    assert env.fake.state.stats()["token_requests"]["stable_token"] == normal
    env.advance(24 * 3600)  # the next day in Beijing
    send((two, env.job()))
    assert env.forced() == 21
    close(one, two)


def test_a_force_refresh_wechat_refuses_is_believed(env: Env) -> None:
    """Someone else (another deployment, an operator's script) forced a refresh a moment ago."""
    one = env.process()
    send((one, env.job()))
    env.storm()
    env.fake.state.issue_stable_token(APPID, force_refresh=True)  # not leadpush: within 30 s WeChat says 45011
    results = [send((one, env.job()))[0] for _ in range(3)]
    assert [r.outcome for r in results] == ["retry"] * 3
    assert env.token_rejections() == {45011: 1}  # asked once, then believed it
    assert "强制刷新" in results[-1].detail
    env.advance(31)
    send((one, env.job()))
    assert env.forced() == 2  # the other's and, 30 s later, leadpush's
    close(one)


# ---- the legacy endpoint ----------------------------------------------------------------------


def test_legacy_servers_keep_a_working_token_across_a_refresh_and_recover_after_the_grace(env: Env) -> None:
    one, two = env.process("legacy"), env.process("legacy")
    assert [r.outcome for r in send((one, env.job()), (two, env.job()))] == ["sent", "sent"]
    assert env.fake.state.stats()["token_requests"] == {"token": 1}  # one fetch, shared
    # WeChat refuses the token once on `one` (a glitch): it fetches a new one past the shared copy.
    env.fake.state.add_fault(SUBSCRIBE_PATH, "errcode", errcode=40001, count=1)
    assert [r.outcome for r in send((one, env.job()))] == ["sent"]
    assert env.fake.state.stats()["token_requests"] == {"token": 2}
    # `two` still holds the first token in memory: it keeps working within the 5-minute grace.
    env.advance(290)
    assert [r.outcome for r in send((two, env.job()))] == ["sent"]
    assert "subscribe" not in env.fake.state.stats()["rejected_by_kind"]  # only the glitch (a fault)
    # After the grace the first token is dead (40001); `two` recovers with the shared new one.
    env.advance(20)
    assert [r.outcome for r in send((two, env.job()))] == ["sent"]
    assert [r.outcome for r in send((two, env.job()))] == ["sent"]
    stats = env.fake.state.stats()
    assert stats["rejected_by_kind"]["subscribe"] == {40001: 1}  # the dead token, once
    assert stats["token_requests"] == {"token": 2}  # recovered without killing `one`'s token
    assert [r.outcome for r in send((one, env.job()))] == ["sent"]
    close(one, two)


def test_legacy_servers_refresh_before_expiry_once_under_the_lock(env: Env) -> None:
    one, two = env.process("legacy"), env.process("legacy")
    send((one, env.job()), (two, env.job()))
    env.advance(7200 - 250)  # inside the refresh margin, on both
    results = send(*((one if i % 2 else two, env.job()) for i in range(20)))
    assert {r.outcome for r in results} == {"sent"}, [r.detail for r in results]
    stats = env.fake.state.stats()
    assert stats["token_requests"] == {"token": 2}  # one refresh for both servers
    assert "subscribe" not in stats["rejected_by_kind"]
    env.advance(400)  # past the old token's grace: nobody holds it any more
    assert {r.outcome for r in send(*((one if i % 2 else two, env.job()) for i in range(6)))} == {"sent"}
    assert env.fake.state.stats()["token_requests"] == {"token": 2}
    close(one, two)


def test_legacy_refetches_past_a_rejected_token_at_most_once_per_30_seconds(env: Env) -> None:
    one, two = env.process("legacy"), env.process("legacy")
    send((one, env.job()))
    env.storm()
    for _ in range(3):
        results = send(*((one if i % 2 else two, env.job()) for i in range(6)))
        assert {r.outcome for r in results} == {"retry"}
        env.advance(10)
    assert env.fake.state.stats()["token_requests"] == {"token": 2}  # the first, and one past the storm
    assert any("距上次重新获取不足 30 秒" in r.detail for r in results)
    env.advance(1)
    send((one, env.job()))
    assert env.fake.state.stats()["token_requests"] == {"token": 3}
    close(one, two)
