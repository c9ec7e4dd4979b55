"""Fixtures: every API test runs against a real server on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import Api, FakeClock, database_url, start_stack, wipe


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    gen = database_url(request.param, str(tmp_path_factory.mktemp(request.param)))
    url = next(gen)
    ctx, server = start_stack(url)
    try:
        yield ctx, server
    finally:
        server.stop()
        ctx.db.dispose()
        gen.close()


@pytest.fixture
def api(stack) -> Iterator[Api]:
    ctx, server = stack
    ctx.clock = FakeClock()
    wipe(ctx)
    a = Api(url=server.url, ctx=ctx)
    try:
        yield a
    finally:
        a.close()


@pytest.fixture
def team(api: Api):
    """A typical company: an admin, team A (manager + two sales), team B (manager + one sales)."""

    class Team:
        admin = api.user("管理员", "admin", None)
        manager = api.user("王经理", "manager", "A")
        alice = api.user("李丽", "sales", "A", wechat_openid="o-alice", wecom_userid="alice")
        bob = api.user("赵强", "sales", "A")
        manager_b = api.user("陈经理", "manager", "B")
        carol = api.user("孙娜", "sales", "B")

    return Team
