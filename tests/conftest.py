"""Fixtures: every API test runs against a real server on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import NO_SCHEDULER, Api, FakeClock, database_url, start_stack, wipe


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """The running service; a param "<kind>/no-scheduler" (support.WITHOUT_SCHEDULER) leaves out that role."""
    kind, _, variant = request.param.partition("/")
    gen = database_url(kind, str(tmp_path_factory.mktemp(kind)))
    url = next(gen)
    roles = frozenset({"api", "worker"}) if variant == NO_SCHEDULER else frozenset({"api", "worker", "scheduler"})
    ctx, server = start_stack(url, roles=roles)
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
