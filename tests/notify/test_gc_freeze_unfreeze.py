"""The api role's gc.freeze() policy: long-lived objects are frozen while many listeners are open, and
thawed (unfrozen, collected, survivors frozen again) when they go, so a closed connection's objects do
not stay for ever: a weak reference to one dies at the thaw. (Steady-count freezing and the measured
frozen garbage: tests/notify/test_gcsteady_policy.py.)"""

from __future__ import annotations

import gc
import re
import weakref

import httpx
import pytest
from support import wait_for
from support.fresh import fresh_interpreter
from support.gclisteners import Connection as Listening
from support.procs import LeadpushProcess
from support.wsclient import WsClient

from leadpush.gcfreeze import GcFreeze
from leadpush.notify.hub import Hub


class Connection(Listening):
    """A listener holding a reference cycle, as a WsConnection does (its queue, lock and tasks): 10 objects."""

    def __init__(self, user_id: int) -> None:
        super().__init__(user_id, parts=10, part=object)


@pytest.fixture
def thawed():
    thresholds = gc.get_threshold()
    made: list[GcFreeze] = []
    yield made
    for policy in made:
        policy.stop()
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def _policy(made: list[GcFreeze], hub: Hub, min_open: int, share: float) -> GcFreeze:
    # The start freezes what the process holds; the sockets' objects are frozen by the first full pass.
    policy = GcFreeze(hub.count_long_lived, lambda: hub.closed, min_open=min_open, share=share, old_objects=10)
    made.append(policy)
    policy.start()
    return policy


def _open(hub: Hub, count: int) -> list[Connection]:
    connections = [Connection(i) for i in range(count)]
    for conn in connections:
        assert hub.try_register(conn.user_id, conn, cap=1)
    return connections


def _close(hub: Hub, connections: list[Connection]) -> weakref.ref[Connection]:
    """Close the last open connection; a weak reference to it."""
    conn = connections.pop()
    hub.unregister(conn.user_id, conn)
    return weakref.ref(conn)


@fresh_interpreter
def test_a_closed_connection_frozen_with_the_rest_is_collected_at_the_thaw(thawed):
    hub = Hub(lambda hashes: hashes)
    policy = _policy(thawed, hub, min_open=5, share=0.25)
    connections = _open(hub, 8)
    assert policy.tick() == "frozen"
    assert gc.get_freeze_count() > 0

    first = _close(hub, connections)
    gc.collect()
    assert first() is not None  # frozen: not even a full collection reaches it
    assert policy.tick() is None  # one of eight gone: less than a quarter of the peak's objects

    second = _close(hub, connections)
    third = _close(hub, connections)  # over a quarter of the peak has gone: their objects are garbage
    assert policy.tick() == "thawed"
    assert first() is None and second() is None and third() is None

    # The five still open were alive at the thaw and are frozen again; when they close, the thaw that
    # follows (fewer than five open) collects them too, and nothing more is frozen after it.
    fourth = _close(hub, connections)
    while connections:
        _close(hub, connections)
    gc.collect()
    assert fourth() is not None
    assert policy.tick() == "thawed"
    assert fourth() is None
    assert policy.tick() is None


@fresh_interpreter
def test_churn_at_a_steady_count_thaws_too(thawed):
    hub = Hub(lambda hashes: hashes)
    policy = _policy(thawed, hub, min_open=4, share=0.5)
    connections = _open(hub, 4)
    assert policy.tick() == "frozen"
    gone = []
    for _ in range(3):  # clients reconnect: the count stays at four
        gone.append(_close(hub, connections))
        replacement = Connection(100 + len(gone))
        assert hub.try_register(replacement.user_id, replacement, cap=1)
        connections.insert(0, replacement)
        assert hub.count() == 4
    gc.collect()  # the replacements' objects are frozen at a full pass, the closed ones' stay frozen
    assert policy.tick() == "thawed"
    assert all(ref() is None for ref in gone)


@fresh_interpreter
def test_nothing_is_frozen_below_the_threshold_or_when_turned_off(thawed):
    hub = Hub(lambda hashes: hashes)
    _open(hub, 3)
    assert GcFreeze(hub.count, lambda: hub.closed, min_open=4, share=0.25).tick() is None
    assert GcFreeze(hub.count, lambda: hub.closed, min_open=0, share=0.25).tick() is None
    assert gc.get_freeze_count() == 0


def _metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    return float(re.search(rf"^{re.escape(name)} (\S+)$", text, re.M).group(1))


def test_the_api_process_freezes_while_sockets_are_open_and_thaws_when_they_close(api, team, tmp_path):
    node = LeadpushProcess(
        {
            "LEADPUSH_DATABASE_URL": api.ctx.settings.database_url,
            "LEADPUSH_GC_FREEZE_MIN_SOCKETS": "3",
            "LEADPUSH_GC_FREEZE_INTERVAL": "0.2",
            "LEADPUSH_GC_FREEZE_OLD_OBJECTS": "1000",
        },
        ("api",),
        tmp_path,
        "gc-freeze",
    ).start()
    try:
        # What the process holds once started is frozen at start.
        at_start = wait_for(lambda: _metric(node.url, "leadpush_gc_frozen_objects"), timeout=30)
        sockets = [
            WsClient(node.url, user.token, resume=0) for user in (team.alice, team.bob, team.carol, team.manager)
        ]
        wait_for(lambda: _metric(node.url, "leadpush_gc_frozen_objects") > at_start, timeout=30)
        assert _metric(node.url, "leadpush_gc_thaws_total") == 0
        full_collections = _metric(node.url, 'leadpush_gc_pause_seconds_count{generation="2"}')
        # Frozen, the process still serves its sockets.
        sockets[0].send({"type": "ping"})
        sockets[0].next_of("pong", timeout=10)
        for ws in sockets:
            ws.close()
        # Fewer than three open: a thaw (unfreeze, full collection, freeze of the survivors).
        wait_for(lambda: _metric(node.url, "leadpush_gc_thaws_total") == 1, timeout=30)
        assert _metric(node.url, 'leadpush_gc_pause_seconds_count{generation="2"}') > full_collections
        assert _metric(node.url, "leadpush_websocket_clients") == 0
    finally:
        node.stop()
