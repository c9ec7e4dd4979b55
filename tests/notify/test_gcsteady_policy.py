"""The api role's gc policy at a steady socket count (issue 17: every full pass under 50 ms with thousands of
sockets open). Objects made while the count stays the same (a burst's, the dispatcher's) are frozen once a
full pass has shown them alive; what dies after its freeze is measured and collected by a thaw; and there is
no timer thaw while many sockets are open (it would be a full pass over everything)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from support.fresh import fresh_interpreter
from support.gclisteners import Connection, Cycle

from leadpush import gcfreeze
from leadpush.gcfreeze import GcFreeze
from leadpush.notify.hub import Hub


@pytest.fixture
def policies() -> Iterator[list[GcFreeze]]:
    made: list[GcFreeze] = []
    thresholds = gc.get_threshold()
    yield made
    for policy in made:
        if hasattr(policy, "stop"):  # (the policy before issue 17's steady-count freezing had none)
            policy.stop()
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def _policy(policies: list[GcFreeze], hub: Hub, **kwargs: Any) -> GcFreeze:
    policy = GcFreeze(hub.count_long_lived, lambda: hub.closed, **kwargs)
    policies.append(policy)
    return policy


def _open(hub: Hub, count: int, first: int = 0) -> list[Connection]:
    gc.disable()
    try:
        connections = [Connection(first + i) for i in range(count)]
    finally:
        gc.enable()
    for conn in connections:
        assert hub.try_register(conn.user_id, conn, cap=1)
    return connections


def _walked(objects: list[Any]) -> int:
    """How many of them are in a generation a collection walks (the others are frozen)."""
    walked = {id(o) for generation in range(3) for o in gc.get_objects(generation=generation)}
    return sum(1 for o in objects if id(o) in walked)


def _frozen(objects: list[Any]) -> bool:
    return _walked(objects) == 0


def _cycles(count: int) -> list[Cycle]:
    """Made with the collector off: no automatic pass freezes some of them on the way (the tests below
    freeze them in one explicit pass)."""
    gc.disable()
    try:
        return [Cycle() for _ in range(count)]
    finally:
        gc.enable()


@fresh_interpreter
def test_objects_made_at_a_steady_socket_count_are_frozen_once_a_full_pass_keeps_them(policies):
    hub = Hub(lambda hashes: hashes)
    policy = _policy(policies, hub, min_open=4, share=0.25)
    policy.start()
    _open(hub, 8)
    policy.tick()  # eight open: the policy is on

    # The count stays at eight; the process keeps making long-lived objects (a burst's caches): more than
    # LEADPUSH_GC_FREEZE_OLD_OBJECTS (20,000) for a full pass to walk.
    kept = [Cycle() for _ in range(20_000)]  # 40,000 objects with their dicts
    gc.collect()
    # Full passes showed them alive and froze them as they came: a full pass walks fewer than 20,000.
    assert len(gc.get_objects(generation=2)) < 20_000
    assert _walked(kept) < len(kept) / 2
    policy.tick()
    assert not _frozen([Cycle()])  # new objects are walked until the next freeze


@fresh_interpreter
def test_full_passes_come_early_while_the_policy_is_on(policies):
    hub = Hub(lambda hashes: hashes)
    policy = _policy(policies, hub, min_open=4, share=0.25)
    thresholds = gc.get_threshold()
    policy.start()
    connections = _open(hub, 8)
    policy.tick()
    assert gc.get_threshold() == (*thresholds[:2], gcfreeze.ACTIVE_GEN2_THRESHOLD)
    for conn in connections:
        hub.unregister(conn.user_id, conn)
    policy.tick()
    assert gc.get_threshold() == thresholds


@fresh_interpreter
def test_the_tick_freezes_when_no_automatic_full_pass_came(policies):
    hub = Hub(lambda hashes: hashes)
    policy = _policy(policies, hub, min_open=4, share=0.25, old_objects=1_000)
    policy.start()
    _open(hub, 8)
    gc.disable()  # no automatic pass
    try:
        policy.tick()
        kept = _cycles(2_000)
        assert policy.tick() == "frozen"
    finally:
        gc.enable()
    assert _frozen(kept)


@fresh_interpreter
def test_garbage_frozen_at_a_steady_count_is_measured_and_collected_by_the_thaw(policies):
    hub = Hub(lambda hashes: hashes)
    policy = _policy(policies, hub, min_open=4, share=0.25, old_objects=50)
    policy.start()
    _open(hub, 8)
    policy.tick()
    gc.collect()  # the sockets' objects frozen: the frozen objects per socket are known
    assert policy.per_listener is not None
    assert policy.tick() is None  # nothing died: no thaw, however often it looks

    # At the same count, a burst's objects alive at a full pass are frozen with it ...
    burst = _cycles(5_000)
    gc.collect()
    assert _frozen(burst)
    refs = [weakref.ref(c) for c in burst[::100]]
    # ... and die after it: cycles a frozen full pass does not reach.
    del burst
    gc.collect()
    assert all(ref() is not None for ref in refs)
    assert policy.garbage() >= 5_000
    assert policy.tick() == "thawed"
    assert all(ref() is None for ref in refs)
    assert policy.last_thaw["found"] >= 5_000
    assert policy.garbage() == 0
    assert policy.tick() != "thawed"  # the eight sockets, still open, stay frozen: no second thaw


@fresh_interpreter
def test_sockets_closed_while_frozen_are_collected_by_the_thaw(policies):
    hub = Hub(lambda hashes: hashes)
    policy = _policy(policies, hub, min_open=4, share=0.25, old_objects=50)
    policy.start()
    connections = _open(hub, 40)
    policy.tick()
    gc.collect()
    assert _frozen(connections)
    gone = []
    for _ in range(5):  # an eighth of the peak: not enough garbage yet
        conn = connections.pop()
        hub.unregister(conn.user_id, conn)
        gone.append(weakref.ref(conn))
    del conn
    assert policy.tick() != "thawed"
    assert all(ref() is not None for ref in gone)
    for _ in range(10):  # over a quarter of the peak's objects gone
        conn = connections.pop()
        hub.unregister(conn.user_id, conn)
        gone.append(weakref.ref(conn))
    del conn
    assert policy.tick() == "thawed"
    assert all(ref() is None for ref in gone)
    assert _frozen(connections)  # the 25 still open were alive at the thaw: frozen again


@fresh_interpreter
def test_below_the_threshold_the_policy_thaws_and_turns_off(policies):
    hub = Hub(lambda hashes: hashes)
    policy = _policy(policies, hub, min_open=4, share=0.25, old_objects=50)
    thresholds = gc.get_threshold()
    policy.start()
    connections = _open(hub, 8)
    policy.tick()
    gc.collect()
    refs = [weakref.ref(c) for c in connections]
    for conn in connections:
        hub.unregister(conn.user_id, conn)
    del connections, conn
    assert policy.tick() == "thawed"
    assert all(ref() is None for ref in refs)
    assert gc.get_threshold() == thresholds
    kept = _cycles(2_000)
    gc.collect()
    assert _walked(kept) == len(kept)  # off: nothing more is frozen
    assert policy.tick() is None


class Plain(Connection):
    """A listener without reference cycles: its objects go by reference counting when it closes, frozen or not."""

    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.token_hash = "h"
        self.state = {"buffer": [{"n": i} for i in range(100)]}


@fresh_interpreter
def test_closed_sockets_whose_objects_went_by_reference_counting_need_no_thaw(policies):
    hub = Hub(lambda hashes: hashes)
    policy = _policy(policies, hub, min_open=4, share=0.25, old_objects=50)
    policy.start()
    connections = [Plain(i) for i in range(40)]
    for conn in connections:
        assert hub.try_register(conn.user_id, conn, cap=1)
    policy.tick()
    gc.collect()
    assert _frozen(connections)
    for conn in connections[20:]:  # half of them close: their objects are freed, frozen as they were
        hub.unregister(conn.user_id, conn)
    del connections[20:], conn
    # The policy's running count still holds them: it counts the frozen objects exactly before thawing,
    # and finds nothing to collect — no full pass over everything.
    assert policy.tick() != "thawed"
    assert policy.thaws == 0 and policy.recounts == 1
    assert policy.garbage() < 0.25 * policy.per_listener * 40
    assert policy.tick() != "thawed"
    assert policy.recounts == 1  # the exact count stands until more is frozen or closed
