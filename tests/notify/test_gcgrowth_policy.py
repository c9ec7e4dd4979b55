"""The api role's gc policy while the socket count grows (issue 17: no full pass over 50 ms with thousands of
sockets). The objects of sockets opening reach generation 2 by generation-1 collections; the policy freezes
them there (`gc.freeze()` after a generation-1 collection, no full pass over them first), so a full pass never
walks much more than LEADPUSH_GC_FREEZE_OLD_OBJECTS however fast sockets open — and what dies after being
frozen this way stays measured and bounded (a thaw collects it)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from support.fresh import fresh_interpreter
from support.gclisteners import Connection, Cycle

from leadpush.gcfreeze import GcFreeze
from leadpush.notify.hub import Hub

Listener, Part = Connection, Cycle  # a socket's objects: ~200 tracked objects in reference cycles


def _request_garbage() -> None:
    """What serving a socket's handshake leaves: short-lived reference cycles (a full pass frees them)."""
    for _ in range(20):
        Part()


class FullPasses:
    """The objects each automatic full (generation-2) collection walks: every object not frozen."""

    def __init__(self) -> None:
        self.walked: list[int] = []

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and info["generation"] == 2:
            self.walked.append(len(gc.get_objects()))


@pytest.fixture
def gcgrowth_policies() -> Iterator[list[Any]]:
    made: list[Any] = []
    thresholds = gc.get_threshold()
    yield made
    for item in made:
        if isinstance(item, GcFreeze):
            item.stop()
        elif item in gc.callbacks:
            gc.callbacks.remove(item)
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def _active_policy(made: list[Any], hub: Hub, old_objects: int) -> GcFreeze:
    policy = GcFreeze(hub.count_long_lived, lambda: hub.closed, min_open=4, share=0.25, old_objects=old_objects)
    made.append(policy)
    policy.start()
    for i in range(8):
        assert hub.try_register(i, Listener(i), cap=1)
    policy.tick()
    assert policy.active
    return policy


def _open(hub: Hub, user_id: int) -> Listener:
    listener = Listener(user_id)
    assert hub.try_register(user_id, listener, cap=1)
    _request_garbage()
    return listener


@fresh_interpreter
def test_gcgrowth_full_passes_stay_small_while_thousands_of_sockets_open(gcgrowth_policies):
    hub = Hub(lambda hashes: hashes)
    policy = _active_policy(gcgrowth_policies, hub, old_objects=5_000)
    passes = FullPasses()
    gc.callbacks.append(passes)
    gcgrowth_policies.append(passes)

    # 2,000 sockets open (~400,000 objects) with the collector running on its own, the policy's tick every
    # 100 sockets (the 2 s of LEADPUSH_GC_FREEZE_INTERVAL at 50 sockets a second).
    opened = []
    for user_id in range(100, 2_100):
        opened.append(_open(hub, user_id))
        if user_id % 100 == 0:
            policy.tick()

    # Generation 2 is frozen after the generation-1 collections that fill it, before a full pass comes:
    # no full pass walks more than LEADPUSH_GC_FREEZE_OLD_OBJECTS plus one generation-1 collection's
    # survivors (thresholds 700 × 10) and the youngest objects.
    # (Each freeze also restarts CPython's count towards a full pass: while the count grows, few come.)
    young = gc.get_threshold()[0] * (gc.get_threshold()[1] + 1)
    assert max(passes.walked, default=0) <= 5_000 + young + 1_000, passes.walked
    assert policy.freezes >= 400_000 / (5_000 + young)
    # Nearly all the sockets' objects are frozen; none was walked by a full pass to get there.
    walked_now = {id(o) for o in gc.get_objects()}
    assert sum(1 for listener in opened if id(listener) in walked_now) < 100
    assert policy.thaws == 0


@fresh_interpreter
def test_gcgrowth_garbage_frozen_under_churn_stays_bounded_and_is_collected(gcgrowth_policies):
    hub = Hub(lambda hashes: hashes)
    policy = _active_policy(gcgrowth_policies, hub, old_objects=5_000)
    opened = [_open(hub, user_id) for user_id in range(100, 1_100)]
    policy.tick()
    assert policy.per_listener is not None

    # Clients reconnect: the count stays at 1,008 while 2,000 sockets close and are replaced, the collector
    # running on its own. Closed sockets' objects frozen with the rest are garbage no pass reaches.
    closed: list[weakref.ref[Listener]] = []
    most_alive = 0
    for n in range(2_000):
        listener = opened.pop(0)
        hub.unregister(listener.user_id, listener)
        closed.append(weakref.ref(listener))
        del listener
        opened.append(_open(hub, 2_000 + n))
        if n % 100 == 99:
            policy.tick()
            closed = [ref for ref in closed if ref() is not None]
            most_alive = max(most_alive, len(closed))
    # The frozen garbage never exceeded the thaw's bound (a quarter of the peak's sockets) by more than the
    # sockets closed between two ticks: it was measured, and thawed.
    assert most_alive <= 0.25 * 1_008 + 100 + 50, most_alive
    assert policy.thaws >= 1
    while opened:
        listener = opened.pop()
        hub.unregister(listener.user_id, listener)
        closed.append(weakref.ref(listener))
    del listener
    assert policy.tick() == "thawed"  # below the threshold: everything frozen dead is collected
    assert all(ref() is None for ref in closed)


@fresh_interpreter
def test_gcgrowth_turning_on_freezes_what_opened_below_the_threshold_without_a_full_pass(gcgrowth_policies):
    hub = Hub(lambda hashes: hashes)
    policy = GcFreeze(hub.count_long_lived, lambda: hub.closed, min_open=50, share=0.25, old_objects=1_000)
    gcgrowth_policies.append(policy)
    policy.start()
    passes = FullPasses()
    gc.callbacks.append(passes)
    gcgrowth_policies.append(passes)
    gc.disable()  # no automatic collection: what the tick does is all there is
    try:
        below = [_open(hub, user_id) for user_id in range(49)]
        assert policy.tick() is None and not policy.active
        opened = [*below, _open(hub, 49)]
        # At the threshold the policy turns on and freezes the 50 sockets' ~10,000 objects — without a
        # full pass over them (a full pass over 200 sockets' objects and the rest: 65,000 objects).
        assert policy.tick() == "frozen"
    finally:
        gc.enable()
    assert passes.walked == []
    walked_now = {id(o) for o in gc.get_objects()}
    assert not any(id(listener) in walked_now for listener in opened)
