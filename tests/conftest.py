"""Fixtures: every API test runs against a real server on SQLite and on PostgreSQL.

`LEADPUSH_TEST_DATABASES=sqlite` narrows the database-parametrised fixtures to SQLite (`make quick`);
CI sets nothing and runs both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

# The support package's helpers assert (e.g. `ok`, `refused`): rewrite them for readable failures.
pytest.register_assert_rewrite("support")

from support import DATABASES, NO_SCHEDULER, Api, FakeClock, running_stack, wipe  # noqa: E402

# Fixtures shared by several test modules: the fake WeChat server and leadpush against it, `leadpush
# serve` clusters, the browser.
pytest_plugins = ["support.channels", "support.procs", "support.browser"]


ALL_ROLES = ("api", "worker", "scheduler")

# A test that opens chromium or spawns a `leadpush serve` cluster is slow, wherever it is.
SLOW_FIXTURES = frozenset({"browser", "cluster"})


# Fixtures whose scope is wider than a test but narrower than the session (a browser, a fake server or a
# leadpush per module): under pytest-xdist (`--dist loadgroup`, scripts/test.sh) the tests that share one
# run on one worker, so it is built once, as in a run without xdist.
SHARED_SCOPES = frozenset({"package", "module", "class"})
HEAVY_GROUP = "heavy"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # In a worker, xdist has turned `dist` into `loadgroup` (True) by the time collection runs.
    grouping = bool(getattr(config.option, "loadgroup", False))
    if hasattr(config, "workerinput"):
        unique_ids(items)
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if grouping and is_heavy(item):
            group_as(item, HEAVY_GROUP)
        elif grouping and shares_a_fixture(item):
            group_as(item, item.path.stem)  # test file names are unique across tests/


class SlowFirst:
    """Under xdist, work is handed out in collection order (groups as one unit, where their first test is): the
    heavy group first (the longest chain), then the other slow tests (browser modules, servers in
    subprocesses), so no worker is left with a long one at the end. After pytest's own reordering (which keeps
    tests of one fixture parameter together; the sort is stable), hence `trylast`."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        def rank(item: pytest.Item) -> int:
            group = item.get_closest_marker("xdist_group")
            if group is not None and group.args[:1] == (HEAVY_GROUP,):
                return 0
            return 1 if item.get_closest_marker("slow") else 2

        items.sort(key=rank)


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "loadgroup", False):  # an xdist worker
        config.pluginmanager.register(SlowFirst(), "leadpush-slow-first")
    if getattr(config.option, "dist", "no") == "loadgroup":  # the xdist controller: keep the workers' order
        config.option.loadscopereorder = False


def unique_ids(items: list[pytest.Item]) -> None:
    """xdist hands out tests by id: tests that share one (schemathesis' cases in tests/api/test_fuzz.py are 50
    items of one id) would run once. Give the second and later ones "#<n>" (the same in every worker)."""
    from _pytest.nodeid import coerce_node_id

    seen: dict[str, int] = {}
    for item in items:
        nodeid = item.nodeid
        seen[nodeid] = seen.get(nodeid, 0) + 1
        if seen[nodeid] > 1:
            item._id = coerce_node_id(f"{nodeid}#{seen[nodeid]}")


def is_heavy(item: pytest.Item) -> bool:
    """Multi-process clusters and fault bursts (1,000 assignments, kill -9, restarts): each keeps both cores busy
    and opens many PostgreSQL connections, so they run one after another on one worker, as without xdist."""
    return "cluster" in getattr(item, "fixturenames", ()) or item.path.parent.name == "reliability"


def group_as(item: pytest.Item, group: str) -> None:
    """Mark the test `xdist_group(group)` and give it the "<nodeid>@<group>" id that xdist's loadgroup scheduler
    reads. xdist 3.8 sets that id through `Item._nodeid`, which pytest 9 no longer reads (ids are structured,
    `Item._id`), so without this the mark alone groups nothing."""
    from _pytest.nodeid import coerce_node_id

    item.add_marker(pytest.mark.xdist_group(group))
    if not item.nodeid.endswith("@" + group):
        item._id = coerce_node_id(f"{item.nodeid}@{group}")


def shares_a_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(defs and defs[-1].scope in SHARED_SCOPES for defs in info.name2fixturedefs.values())


@pytest.fixture(scope="session")
def running_stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], tuple]]:
    """The running services of this session by `stack` param, each started on first use and kept until the
    session ends: tests of one database do not always come in one run (other parametrised fixtures, and
    pytest-xdist, interleave them), and a switch must not rebuild a database and restart a server."""
    started: dict[str, tuple] = {}
    with ExitStack() as stacks:

        def get(param: str) -> tuple:
            if param not in started:
                kind, _, variant = param.partition("/")
                roles = frozenset({"api", "worker"}) if variant == NO_SCHEDULER else frozenset(ALL_ROLES)
                tmp = str(tmp_path_factory.mktemp(kind))
                started[param] = stacks.enter_context(running_stack(kind, tmp, roles=roles))
            return started[param]

        yield get


@pytest.fixture(scope="session", params=DATABASES)
def stack(request: pytest.FixtureRequest, running_stacks: Callable[[str], tuple]) -> tuple:
    """The running service; a param "<kind>/no-scheduler" (support.WITHOUT_SCHEDULER) leaves out that role."""
    return running_stacks(request.param)


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
