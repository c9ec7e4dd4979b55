"""Keep long-lived connection objects out of full garbage collections (api role).

With 5,000 sockets an api process tracks about a million objects, and a generation-2 collection walks
them all: 0.5-1.0 s during which no push, heartbeat or HTTP answer leaves the process
(benchmarks/findings.md). `gc.freeze()` moves every tracked object into the permanent generation, which
no collection visits. So, while at least LEADPUSH_GC_FREEZE_MIN_SOCKETS sockets are
open, `GcFreeze.tick` (every LEADPUSH_GC_FREEZE_INTERVAL seconds), when more sockets are open than at
its last freeze, collects the young generations (garbage made since the last tick goes before it could
be frozen) and freezes what is left. Only sockets count: long polls live for seconds.

Frozen objects are never collected, including the reference cycles of connections that close while
frozen. So the policy thaws — `gc.unfreeze()`, a full `gc.collect()`, and `gc.freeze()` of what
survived it (all alive) — when the number of listeners closed since the first freeze reaches
LEADPUSH_GC_UNFREEZE_SHARE of the most that were open since (people leaving, or churn at a steady
count), when fewer than the threshold remain open, or LEADPUSH_GC_UNFREEZE_AFTER seconds after the
first freeze (cycles that were in flight at a freeze: a request's, a task's). A thaw is one full
collection, as long as the ones the freezing avoids, at a moment the policy picks.

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


class GcFreeze:
    def __init__(
        self,
        open_count: Callable[[], int],
        closed_count: Callable[[], int],
        min_open: int,
        share: float,
        max_age: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.open_count = open_count
        self.closed_count = closed_count
        self.min_open = min_open
        self.share = share
        self.max_age = max_age
        self.clock = clock
        self.grown = False  # frozen more since the last thaw (or ever)
        self.peak = 0  # the most listeners open since then
        self.closed_at_first = 0
        self.first_at = 0.0
        self.frozen_at = 0  # listeners open at the last freeze
        self.freezes = 0
        self.thaws = 0

    def start(self) -> None:
        """Freeze what the process holds once started (modules, routes, mappers: a few hundred thousand
        objects that live as long as it does), after a full collection, so no later one walks them."""
        if self.min_open <= 0:
            return
        gc.collect()
        gc.freeze()
        log.info("启动完成：%d 个常驻对象已冻结，不再参与完整垃圾回收", gc.get_freeze_count())

    def tick(self) -> str | None:
        """Freeze more, thaw or leave it: "frozen", "thawed" or None."""
        if self.min_open <= 0:
            return None
        open_now = self.open_count()
        if self.grown:
            self.peak = max(self.peak, open_now)
            gone = self.closed_count() - self.closed_at_first
            if (
                open_now < self.min_open
                or gone >= self.share * self.peak
                or self.clock() - self.first_at >= self.max_age
            ):
                self.thaw()
                return "thawed"
        if open_now < self.min_open or (self.grown and open_now <= self.frozen_at):
            return None  # at a steady count, new sockets' objects stay young until the next thaw
        self.frozen_at = open_now
        gc.collect(1)  # the young garbage goes first: it would be frozen with the rest
        gc.freeze()
        self.freezes += 1
        if not self.grown:
            self.grown = True
            self.peak = open_now
            self.closed_at_first = self.closed_count()
            self.first_at = self.clock()
        return "frozen"

    def thaw(self) -> None:
        """Unfreeze, collect everything (the closed connections' cycles), and freeze what survived: it is
        all alive now. What dies later waits for the next thaw; objects of fewer than `min_open`
        listeners at most, as no thaw follows until that many are open again."""
        frozen = gc.get_freeze_count()
        gc.unfreeze()
        started = time.perf_counter()
        found = gc.collect()
        took = time.perf_counter() - started
        gc.freeze()
        self.grown = False
        self.peak = 0
        self.frozen_at = 0
        self.thaws += 1
        log.info("已解冻 %d 个对象并完整回收（%d 个不可达，用时 %.0f ms）", frozen, found, took * 1000)


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
        frozen.add_metric([], gc.get_freeze_count())
        thaws = CounterMetricFamily("leadpush_gc_thaws", "Unfreeze + full collection + freeze of the survivors")
        thaws.add_metric([], self.policy.thaws if self.policy is not None else 0)
        yield pauses
        yield cpu_pauses
        yield longest
        yield frozen
        yield thaws
