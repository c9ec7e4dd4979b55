"""Keep long-lived connection objects out of full garbage collections (api role).

With 5,000 sockets an api process tracks about a million objects, and a generation-2 collection walks
them all: 0.5-1.0 s during which no push, heartbeat or HTTP answer leaves the process
(benchmarks/findings.md). `gc.freeze()` moves every tracked object into the permanent generation, which
no collection visits; a full pass then walks only what is not frozen, and takes as long as that is big.

The policy keeps the unfrozen old generation small while at least LEADPUSH_GC_FREEZE_MIN_SOCKETS (50) sockets
are open (only sockets count: long polls live for seconds). Below it the collector runs as CPython's does,
walking everything made since the start: at 200 sockets (the default until issue 17's fourth round) a full
pass walked 65,000 objects (36 ms of CPU) before the policy turned on:

- **Freeze the survivors of a full pass** once they reach LEADPUSH_GC_FREEZE_OLD_OBJECTS (10,000): a
  `gc.callbacks` hook runs right after each generation-2 pass, when every object left in generation 2 has
  just been proven reachable, so only live objects are frozen — at any socket count, whether they belong
  to sockets opening, the dispatcher or a burst's caches.
- **Freeze what generation-1 collections promote** once LEADPUSH_GC_FREEZE_OLD_OBJECTS wait in generation 2:
  the same hook runs after each generation-1 collection, which has just collected the young garbage and
  moved the survivors to generation 2; `gc.freeze()` there costs no pass (it moves the generations' lists
  into the permanent one). While sockets open, their objects thus reach the permanent generation without a
  full pass walking them first (before, every pass walked the ~30,000 objects promoted since the last one:
  20,000+ objects a pass, issue 17's last long passes); in a burst, its caches and in-flight objects the
  same. A full pass then walks at most LEADPUSH_GC_FREEZE_OLD_OBJECTS plus one generation-1 collection's
  survivors (at most ~7,700 objects with thresholds 700 × 10) and the youngest objects. These objects were
  proven alive only by a generation-1 pass (reachable from older objects, which may be dead themselves),
  or were in flight: what of them dies in a reference cycle is frozen garbage, counted like the rest below.
  (In the benchmarks' api processes a full pass collected a few hundred of the 20,000 objects it walked.)
  `GcFreeze.tick` (every LEADPUSH_GC_FREEZE_INTERVAL seconds) does the same by itself (`gc.collect(1)`)
  should no automatic collection have frozen them — also when the policy turns on: the objects of the
  sockets opened below the threshold are frozen then without a full pass over them.
- **Full passes come early**: generation 2's threshold is 3 instead of 10 (a full pass may follow every
  fourth generation-1 collection instead of every eleventh), so at most ~30,000 objects are promoted
  between two chances of one (~77,000 with 10), on top of CPython's own rule (a quarter more than the last
  pass kept). Raising the threshold would make passes rarer, each walking more; 1 made them twice as many
  and the longest no shorter (benchmarks: ≤ 50 ms CPU either way). Early passes collect the cyclic garbage
  promoted to generation 2 before a generation-1 freeze would freeze it.

Frozen objects are never collected — a reference cycle that dies after its freeze (a closed socket's, a
request that was in flight) stays until a **thaw**: `gc.unfreeze()`, one full `gc.collect()` over everything,
`gc.freeze()` of the survivors. A thaw walks every frozen object: with 5,000 sockets ~1M objects, 0.5-1 s,
the very pause the freezing avoids. So there is no timer: the policy thaws

- when fewer than LEADPUSH_GC_FREEZE_MIN_SOCKETS sockets are open (the cheapest moment there is), or
- when the frozen garbage, **measured**, reaches LEADPUSH_GC_UNFREEZE_SHARE of what the most sockets open
  since the last thaw held frozen (the leak is bounded; under churn at thousands of sockets this is one
  long pause per that many objects).

The measure: after the start and after each thaw everything frozen is alive (`floor_frozen`, with
`floor_open` sockets open). Each freeze with at least MIN_SOCKETS more sockets open than then gives the
frozen objects per socket (`per_listener`, the smallest seen). Frozen garbage ≈ the frozen objects now −
`floor_frozen` − `per_listener` × (sockets open now − `floor_open`): a closed socket's objects, and cycles
frozen alive that died since. Objects that live on but belong to no socket (caches filling up) count as
garbage until the next thaw makes them the floor. The thaw logs the estimate beside what it found;
/metrics shows the estimate (`leadpush_gc_frozen_garbage_objects`).

Counting the frozen objects is itself a walk over all of them (`gc.get_freeze_count()`: ~0.2 s with a
million here), so the policy keeps a running count — each freeze adds its survivors, weighted by the share
of what was frozen since the previous exact count that the last one found still frozen (a burst's objects
frozen in flight mostly go by reference counting soon after; so do most of a closed socket's) — and counts
exactly only when the running count says a thaw is due: the thaw follows only if the exact count agrees.

The objects the process holds once started are frozen at start (`GcFreeze.start`), and survive every
thaw frozen again.

`GcPauses` times each collection through `gc.callbacks`, for /metrics.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Generation 2's threshold while the policy is active: a full pass may follow every fourth generation-1
# collection (CPython's default 10: every eleventh, ~77,000 promoted objects later in the worst case).
ACTIVE_GEN2_THRESHOLD = 3
MIN_KEPT_SHARE = 0.25


class GcFreeze:
    def __init__(
        self,
        open_count: Callable[[], int],
        closed_count: Callable[[], int],
        min_open: int,
        share: float,
        old_objects: int = 10_000,
    ):
        self.open_count = open_count
        self.closed_count = closed_count  # kept for callers; the estimate needs only the open count
        self.min_open = min_open
        self.share = share
        self.old_objects = old_objects
        # Set by `tick` (the event loop), read by the gc hook, which may run in any thread inside any
        # allocation — also one made under the hub's lock, so the hook never calls `open_count`.
        self.active = False  # at least min_open sockets at the last tick: full passes freeze survivors
        self.open_seen = 0  # sockets open at the last tick
        # Frozen objects, counted as they are frozen: `gc.get_freeze_count()` walks the whole permanent
        # generation (~0.2 s with 1M objects here), so it is called only when the count must be exact.
        # Frozen objects freed by reference counting since the last exact count are still in it: an upper
        # bound.
        self.frozen = 0.0
        # Of the objects frozen since the last exact count, the share still frozen at it (the rest went by
        # reference counting: a burst's objects frozen in flight). New freezes count with it, at least
        # MIN_KEPT_SHARE, so a burst does not call for exact counts one after the other.
        self.kept_share = 1.0
        self._exact = 0  # the last exact count
        self._added = 0  # objects frozen since
        self.recounts = 0
        self.recount_longest = 0.0
        self.floor_frozen = 0  # frozen objects after the start or the last thaw: all alive then
        self.floor_open = 0  # sockets open then
        self.per_listener: float | None = None  # frozen objects a socket holds (the smallest estimate)
        self.peak = 0  # the most sockets open since the floor
        self.frozen_since_floor = False
        self.freezes = 0
        self.promoted_freezes = 0  # of them, after a generation-1 pass
        self.thaws = 0
        self.last_thaw: dict[str, float] = {}
        self._thawing = False
        self._installed = False
        self._thresholds = gc.get_threshold()

    def start(self) -> None:
        """Freeze what the process holds once started (modules, routes, mappers: a few hundred thousand
        objects that live as long as it does), after a full collection, so no later one walks them; and
        hook the freezing of full passes' survivors."""
        if self.min_open <= 0:
            return
        self._thresholds = gc.get_threshold()
        gc.collect()
        gc.freeze()
        self._reset_pass_rule()
        self.frozen = self._exact = gc.get_freeze_count()
        self._added = 0
        self.floor_frozen, self.floor_open = self.frozen, 0
        if not self._installed:
            gc.callbacks.insert(0, self._after_pass)  # first: its freeze counts in GcPauses' pause
            self._installed = True
        log.info("启动完成：%d 个常驻对象已冻结，不再参与完整垃圾回收", self._exact)

    def stop(self) -> None:
        """Unhook, restore the thresholds and unfreeze: leave the process (tests run several) as it was."""
        if self._installed:
            gc.callbacks.remove(self._after_pass)
            self._installed = False
        if self.min_open > 0:
            gc.set_threshold(*self._thresholds)
            gc.unfreeze()
        self.active = False

    @staticmethod
    def _reset_pass_rule() -> None:
        # CPython runs an automatic full pass only once a quarter more objects than its last one kept
        # reached generation 2; right after a freeze that count is all that was frozen. A pass over
        # nothing sets it to zero: the next full pass comes after a few thousand objects, not 100,000s.
        gc.collect()

    def _after_pass(self, phase: str, info: dict[str, Any]) -> None:
        """After each full pass: freeze its survivors — all reachable just now — once there are enough.
        After each generation-1 pass: freeze generation 2 once that many wait there for a full pass."""
        if phase != "stop" or not self.active or self._thawing:
            return
        generation = info.get("generation")
        if generation == 2:
            self._freeze_survivors()
        elif generation == 1:
            self._freeze_promoted()

    def _freeze_promoted(self) -> bool:
        # Generations 0 and 1 were just merged into generation 2 (their garbage collected): what it holds
        # now is everything a full pass would walk but the youngest objects.
        waiting = len(gc.get_objects(generation=2))
        if waiting < self.old_objects:
            return False
        self._freeze(waiting)
        self.promoted_freezes += 1
        return True

    def _freeze_survivors(self) -> bool:
        survivors = len(gc.get_objects())  # right after a full pass all are in generation 2
        if survivors < self.old_objects:
            return False
        self._freeze(survivors)
        return True

    def _freeze(self, survivors: int) -> None:
        gc.freeze()
        self.frozen += survivors * self.kept_share
        self._added += survivors
        self.freezes += 1
        self.frozen_since_floor = True
        grown = self.open_seen - self.floor_open
        if grown >= self.min_open:
            each = (self.frozen - self.floor_frozen) / grown
            if self.per_listener is None or each < self.per_listener:
                self.per_listener = each

    def garbage(self) -> int:
        """The frozen objects no open socket accounts for: dead cycles waiting for a thaw (an estimate)."""
        return max(0, round(self._garbage()))

    def _garbage(self) -> float:
        if not self._dirty() or self.per_listener is None:
            return 0.0
        live = self.floor_frozen + self.per_listener * (self.open_seen - self.floor_open)
        return self.frozen - live

    def _recount(self) -> float:
        """Count the frozen objects exactly (those freed since by reference counting go): the estimate again."""
        started = time.perf_counter()
        exact = gc.get_freeze_count()
        took = time.perf_counter() - started
        if self._added >= self.old_objects:
            self.kept_share = min(1.0, max(MIN_KEPT_SHARE, (exact - self._exact) / self._added))
        self.frozen, self._exact, self._added = exact, exact, 0
        self.recounts += 1
        self.recount_longest = max(self.recount_longest, took)
        log.info("冻结对象重新计数：%d 个（用时 %.0f ms，留存比例 %.2f）", exact, took * 1000, self.kept_share)
        return self._garbage()

    def _dirty(self) -> bool:
        """Frozen more since the floor, or sockets frozen in it have closed: frozen garbage is possible."""
        return self.frozen_since_floor or self.open_seen < self.floor_open

    def tick(self) -> str | None:
        """Thaw, freeze or leave it: "thawed", "frozen" or None."""
        if self.min_open <= 0:
            return None
        open_now = self.open_seen = self.open_count()
        result = None
        if self._dirty():
            self.peak = max(self.peak, open_now)
            bound = self.share * (self.per_listener or 0.0) * self.peak
            # Below the threshold: unless only a few sockets were ever frozen since (a thaw then walks
            # start-up objects for nothing each time one closes).
            few = open_now < self.min_open and (self.frozen_since_floor or self.floor_open >= self.min_open)
            if few or (self.per_listener is not None and self._garbage() >= bound and self._recount() >= bound):
                self.thaw()
                result = "thawed"
        active = open_now >= self.min_open
        turned_on = active and not self.active
        if active != self.active:
            self.active = active  # on: the hook freezes from now on
            if not active:
                gc.set_threshold(*self._thresholds)
        if active and result is None and len(gc.get_objects()) >= self.old_objects:
            # No automatic collection froze them (or the policy has just turned on, and what opened below the
            # threshold was never frozen): a generation-1 pass over the young objects only, after which the
            # hook freezes generation 2 — no full pass over it (turning on at 200 sockets, that was a pass
            # over 60,000-80,000 objects).
            freezes = self.freezes
            gc.collect(1)
            if self.freezes > freezes:
                result = "frozen"
        if turned_on:
            # Only now: below the threshold up to ten generation-1 collections may have come since the last
            # full pass, and with generation 2's threshold at 3 the next collection in any thread would be a
            # full pass over what the freeze above takes (a benchmark caught one, 53,000 objects, 54 sockets).
            gc.set_threshold(*self._thresholds[:2], ACTIVE_GEN2_THRESHOLD)
        return result

    def thaw(self) -> None:
        """Unfreeze, collect everything (the closed connections' cycles), and freeze what survived: it is
        all alive now, the new floor of the garbage estimate."""
        frozen, estimate = round(self.frozen), self.garbage()
        self._thawing = True
        try:
            gc.unfreeze()
            started, cpu_started = time.perf_counter(), time.thread_time()
            found = gc.collect()
            took, cpu = time.perf_counter() - started, time.thread_time() - cpu_started
            gc.freeze()
            self._reset_pass_rule()
        finally:
            self._thawing = False
        self.frozen = self._exact = gc.get_freeze_count()
        self._added = 0
        self.floor_frozen, self.floor_open = self.frozen, self.open_seen
        self.frozen_since_floor = False
        self.peak = self.open_seen
        self.thaws += 1
        self.last_thaw = {"frozen": frozen, "estimate": estimate, "found": found, "seconds": took, "cpu": cpu}
        log.info(
            "已解冻 %d 个对象并完整回收（估计 %d 个、实际 %d 个不可达，用时 %.0f ms）",
            frozen,
            estimate,
            found,
            took * 1000,
        )


class GcPauses(Collector):
    """How long the collector stopped the process, per generation: a histogram and the longest pause."""

    def __init__(self, policy: GcFreeze | None = None) -> None:
        self.policy = policy
        # No lock: the callback may run in any thread, inside any allocation — also one made while
        # `collect` reads these lists (a lock there would deadlock). The GIL keeps each update whole.
        self._started: dict[int, tuple[float, float]] = {}
        self.count = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self.buckets = [[0] * len(PAUSE_BUCKETS) for _ in range(3)]  # not cumulative; +Inf is count
        # The collector's own CPU time per pause (the wall time also holds what a busy machine adds).
        self.cpu_total = [0.0, 0.0, 0.0]
        self.cpu_buckets = [[0] * len(PAUSE_BUCKETS) for _ in range(3)]

    def install(self) -> None:
        gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        now, cpu_now = time.perf_counter(), time.thread_time()
        thread = threading.get_ident()
        if phase == "start":
            self._started[thread] = (now, cpu_now)
            return
        begun = self._started.pop(thread, None)
        started, cpu_started = begun if begun is not None else (None, 0.0)
        generation = info.get("generation", 2)
        if started is None or not 0 <= generation <= 2:
            return
        took = now - started
        self.count[generation] += 1
        self.total[generation] += took
        if took > self.longest[generation]:
            self.longest[generation] = took
        for i, bound in enumerate(PAUSE_BUCKETS):
            if took <= bound:
                self.buckets[generation][i] += 1
                break
        cpu = cpu_now - cpu_started
        self.cpu_total[generation] += cpu
        for i, bound in enumerate(PAUSE_BUCKETS):
            if cpu <= bound:
                self.cpu_buckets[generation][i] += 1
                break

    def collect(self) -> Iterator[GaugeMetricFamily | HistogramMetricFamily | CounterMetricFamily]:
        pauses = HistogramMetricFamily(
            "leadpush_gc_pause_seconds", "Garbage collection pauses by generation", labels=["generation"]
        )
        cpu_pauses = HistogramMetricFamily(
            "leadpush_gc_pause_cpu_seconds",
            "CPU time of the collector in each pause, by generation (the wall time adds a busy machine's waits)",
            labels=["generation"],
        )
        longest = GaugeMetricFamily(
            "leadpush_gc_pause_max_seconds", "The longest garbage collection pause since start", labels=["generation"]
        )
        for generation in range(3):
            label = [str(generation)]
            count, total, counts = self.count[generation], self.total[generation], list(self.buckets[generation])
            cumulative, buckets = 0, []
            for bound, n in zip(PAUSE_BUCKETS, counts, strict=True):
                cumulative += n
                buckets.append((repr(bound), cumulative))
            buckets.append(("+Inf", max(count, cumulative)))
            pauses.add_metric(label, buckets, total)
            cumulative, buckets = 0, []
            for bound, n in zip(PAUSE_BUCKETS, list(self.cpu_buckets[generation]), strict=True):
                cumulative += n
                buckets.append((repr(bound), cumulative))
            buckets.append(("+Inf", max(count, cumulative)))
            cpu_pauses.add_metric(label, buckets, self.cpu_total[generation])
            longest.add_metric(label, self.longest[generation])
        frozen = GaugeMetricFamily("leadpush_gc_frozen_objects", "Objects in the permanent generation (gc.freeze)")
        # The policy's count (exact at its start, thaws and recounts): walking the permanent generation
        # for each scrape would stop the process ~0.2 s with 5,000 sockets.
        frozen.add_metric([], round(self.policy.frozen) if self.policy is not None else gc.get_freeze_count())
        thaws = CounterMetricFamily("leadpush_gc_thaws", "Unfreeze + full collection + freeze of the survivors")
        thaws.add_metric([], self.policy.thaws if self.policy is not None else 0)
        freezes = CounterMetricFamily("leadpush_gc_freezes", "Survivors of a full pass frozen (gc.freeze)")
        freezes.add_metric([], self.policy.freezes if self.policy is not None else 0)
        garbage = GaugeMetricFamily(
            "leadpush_gc_frozen_garbage_objects",
            "Frozen objects no open socket accounts for (estimated): dead cycles waiting for a thaw",
        )
        garbage.add_metric([], self.policy.garbage() if self.policy is not None else 0)
        yield pauses
        yield cpu_pauses
        yield longest
        yield frozen
        recounts = CounterMetricFamily(
            "leadpush_gc_frozen_recounts", "Exact counts of the frozen objects (each walks them all)"
        )
        recounts.add_metric([], self.policy.recounts if self.policy is not None else 0)
        recount_longest = GaugeMetricFamily(
            "leadpush_gc_frozen_recount_max_seconds", "The longest exact count of the frozen objects"
        )
        recount_longest.add_metric([], self.policy.recount_longest if self.policy is not None else 0.0)
        yield thaws
        yield recounts
        yield recount_longest
        yield freezes
        yield garbage
