"""Fixtures: every API test runs against a real server on SQLite and on PostgreSQL.

`LEADPUSH_TEST_DATABASES=sqlite` narrows the database-parametrised fixtures to SQLite (`make quick`);
CI sets nothing and runs both.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# The support package's helpers assert (e.g. `ok`, `refused`): rewrite them for readable failures.
pytest.register_assert_rewrite("support")

from support import DATABASES, NO_SCHEDULER, Api, FakeClock, running_stack, wipe  # noqa: E402

# Fixtures shared by several test modules: the fake WeChat server and leadpush against it, `leadpush
# serve` clusters, the browser.
pytest_plugins = ["support.channels", "support.procs", "support.browser"]


# A test that opens chromium or spawns a `leadpush serve` cluster is slow, wherever it is.
SLOW_FIXTURES = frozenset({"browser", "cluster"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", params=DATABASES)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """The running service; a param "<kind>/no-scheduler" (support.WITHOUT_SCHEDULER) leaves out that role."""
    kind, _, variant = request.param.partition("/")
    roles = frozenset({"api", "worker"}) if variant == NO_SCHEDULER else frozenset({"api", "worker", "scheduler"})
    with running_stack(kind, str(tmp_path_factory.mktemp(kind)), roles=roles) as started:
        yield started


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
