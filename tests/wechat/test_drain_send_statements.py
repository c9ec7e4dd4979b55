"""What one WeChat send costs the database (issue 17: draining pending WeChat deliveries had slowed down).

A send looks at the daily-quota marker, reserves the person's credit, calls WeChat and settles the credit.
It used to be three transactions and six statements (a read of the marker; the reservation's look-up,
decrement, balance read and marker row; the settlement); now the marker and the reservation share one
transaction and the decrement reads the balance back: two transactions, four statements. What the person
and the operator see is unchanged: one message, one credit spent.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.util
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from support import DATABASES, FakeClock, database_url, wipe
from support.channels import APPID, TEMPLATE, FakeWeChatServer, channel_settings

from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.migrate import upgrade
from leadpush.notify.channels.base import DeliveryJob, Recipient
from leadpush.tencent.store import DbStore
from leadpush.tencent.tokens import TokenCache
from leadpush.users.service import create_user
from leadpush.wechat.channel import WechatChannel, token_fetcher
from leadpush.wechat.credits import add_credits, credits_of

OPENID = "o-drain-mini"
LEAD = {"customerId": 7, "customerName": "张三", "customerPhone": "13800138000", "source": "抖音广告"}


@pytest.fixture(params=DATABASES)
def ctx(request: pytest.FixtureRequest, fake: FakeWeChatServer, tmp_path) -> Iterator[AppContext]:
    gen = database_url(request.param, str(tmp_path))
    url = next(gen)
    upgrade(url)
    fake.state.reset(full=True)
    context = AppContext.from_settings(
        Settings(database_url=url, send_timeout=2.0, **channel_settings(fake.url)), clock=FakeClock()
    )
    wipe(context)
    try:
        yield context
    finally:
        context.db.dispose()
        gen.close()


def make_channel(ctx: AppContext) -> WechatChannel:
    s = ctx.settings
    client = httpx.AsyncClient(timeout=s.send_timeout)
    fetch = token_fetcher(client, s.wechat_api_base, APPID, s.wechat_secret or "", s.wechat_token_mode)
    tokens = TokenCache(f"wechat:{APPID}", fetch, DbStore(ctx.db, ctx.clock), ctx.clock, s.token_refresh_margin)
    return WechatChannel(ctx, tokens, client)


def job(ctx: AppContext, user_id: int, delivery_id: int) -> DeliveryJob:
    return DeliveryJob(
        delivery_id=delivery_id,
        channel="wechat",
        attempts=1,
        lease_until=ctx.clock.now() + timedelta(seconds=60),
        notification_id=delivery_id,
        prev_id=None,
        kind="customer_assigned",
        title="您有一条新线索：张三",
        body="",
        payload=dict(LEAD, customerId=delivery_id),
        created_at=datetime(2026, 11, 24, 2, 1, tzinfo=UTC),
        recipient=Recipient(user_id, "李丽", OPENID, None),
    )


class Counted:
    """Statements and transactions on the context's engine while in use."""

    def __init__(self, ctx: AppContext) -> None:
        self.engine = ctx.db.engine
        self.statements: list[str] = []
        self.transactions = 0

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            self.statements.append(" ".join(statement.split())[:120])

    def _begin(self, _conn: Any) -> None:
        self.transactions += 1

    def __enter__(self) -> Counted:
        event.listen(self.engine, "before_cursor_execute", self._statement)
        event.listen(self.engine, "begin", self._begin)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine, "begin", self._begin)


def test_a_wechat_send_is_two_transactions_and_four_statements(ctx: AppContext, fake: FakeWeChatServer) -> None:
    with ctx.db.write() as session:
        user, _ = create_user(
            session, name="李丽", role="sales", team="A", create_missing_team=True, wechat_openid=OPENID
        )
        user_id = user.id
        add_credits(session, user_id, [TEMPLATE] * 3, datetime.now(UTC))
    fake.state.set_credits(OPENID, TEMPLATE, 3)
    channel = make_channel(ctx)

    async def run() -> tuple[str, str, Counted]:
        try:
            first = await channel.send(job(ctx, user_id, 1))  # fetches and stores the access token
            with Counted(ctx) as counted:
                second = await channel.send(job(ctx, user_id, 2))
            return first.outcome, second.outcome, counted
        finally:
            await channel.aclose()

    first, second, counted = asyncio.run(run())
    assert (first, second) == ("sent", "sent")
    assert len(fake.state.get_messages("subscribe")) == 2
    with ctx.db.read() as session:
        assert credits_of(session, user_id)[TEMPLATE] == 1
    assert counted.transactions <= 2, counted.statements
    assert len(counted.statements) <= 4, counted.statements


async def _library() -> str:
    from httpcore._synchronization import current_async_library

    return current_async_library()


class _Lookups(importlib.abc.MetaPathFinder):
    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        self.names.append(fullname)
        return None


def test_httpcore_does_not_search_for_sniffio_on_every_request() -> None:
    """httpcore imports sniffio for every lock and stream it sets up; without it installed, each import
    searched sys.path (~25% of the worker's event-loop CPU in a drain). It is a dependency (pyproject.toml)."""
    from httpcore._synchronization import current_async_library

    import leadpush.wechat.channel  # noqa: F401 - what the worker imports

    asyncio.run(_library())  # the first import may search; every later one must not
    finder = _Lookups()
    sys.meta_path.insert(0, finder)
    try:

        async def many() -> list[str]:
            return [current_async_library() for _ in range(50)]

        assert set(asyncio.run(many())) == {"asyncio"}
    finally:
        sys.meta_path.remove(finder)
    assert "sniffio" not in finder.names
