"""Keep long-lived connection objects out of full garbage collections (api role).

With 5,000 sockets an api process tracks about a million objects, and a generation-2 collection walks
them all: 0.5-1.0 s during which no push, heartbeat or HTTP answer leaves the process
(benchmarks/findings.md). `gc.freeze()` moves every tracked object into the permanent generation, which
no collection visits. So, while at least LEADPUSH_GC_FREEZE_MIN_LISTENERS sockets and long polls are
open, `GcFreeze.tick` (every LEADPUSH_GC_FREEZE_INTERVAL seconds) collects the young generations
(garbage made since the last tick goes before it could be frozen) and freezes what is left.

Frozen objects are never collected, including the reference cycles of connections that close while
frozen. So the policy unfreezes (`gc.unfreeze()` + a full `gc.collect()`) when the number of listeners
closed since the first freeze reaches LEADPUSH_GC_UNFREEZE_SHARE of the most that were open while
frozen (people leaving, or churn at a steady count), or when fewer than the threshold remain open; if
still enough are open, the next tick freezes the survivors again.

`GcPauses` times each collection through `gc.callbacks`, for /metrics.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


class GcFreeze:
    def __init__(self, open_count: Callable[[], int], closed_count: Callable[[], int], min_open: int, share: float):
        self.open_count = open_count
        self.closed_count = closed_count
        self.min_open = min_open
        self.share = share
        self.frozen = False
        self.peak = 0  # the most listeners open since the first freeze
        self.closed_at_freeze = 0
        self.freezes = 0
        self.unfreezes = 0

    def tick(self) -> str | None:
        """Freeze, unfreeze or leave it: "frozen", "unfrozen" or None."""
        if self.min_open <= 0:
            return None
        open_now = self.open_count()
        if self.frozen:
            self.peak = max(self.peak, open_now)
            gone = self.closed_count() - self.closed_at_freeze
            if open_now < self.min_open or gone >= self.share * self.peak:
                self.unfreeze()
                return "unfrozen"
        if open_now < self.min_open:
            return None
        gc.collect(1)
        gc.freeze()
        self.freezes += 1
        if not self.frozen:
            self.frozen = True
            self.peak = open_now
            self.closed_at_freeze = self.closed_count()
        return "frozen"

    def unfreeze(self) -> None:
        """Everything back into the collector's reach, and collected now (closed connections' cycles)."""
        frozen = gc.get_freeze_count()
        gc.unfreeze()
        started = time.perf_counter()
        found = gc.collect()
        self.frozen = False
        self.peak = 0
        self.unfreezes += 1
        log.info(
            "已解冻 %d 个对象并回收（%d 个不可达，用时 %.0f ms）", frozen, found, (time.perf_counter() - started) * 1000
        )


class GcPauses(Collector):
    """How long the collector stopped the process, per generation: count, total and the longest pause."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: dict[int, float] = {}
        self.count = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]

    def install(self) -> None:
        gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        thread = threading.get_ident()
        if phase == "start":
            self._started[thread] = now
            return
        started = self._started.pop(thread, None)
        generation = info.get("generation", 2)
        if started is None or not 0 <= generation <= 2:
            return
        took = now - started
        with self._lock:
            self.count[generation] += 1
            self.total[generation] += took
            self.longest[generation] = max(self.longest[generation], took)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        count = CounterMetricFamily("leadpush_gc_collections", "Garbage collections by generation", labels=["generation"])
        total = CounterMetricFamily(
            "leadpush_gc_pause_seconds", "Time spent in garbage collections by generation", labels=["generation"]
        )
        longest = GaugeMetricFamily(
            "leadpush_gc_pause_max_seconds", "The longest garbage collection pause since start", labels=["generation"]
        )
        with self._lock:
            for generation in range(3):
                label = [str(generation)]
                count.add_metric(label, self.count[generation])
                total.add_metric(label, self.total[generation])
                longest.add_metric(label, self.longest[generation])
        frozen = GaugeMetricFamily("leadpush_gc_frozen_objects", "Objects in the permanent generation (gc.freeze)")
        frozen.add_metric([], gc.get_freeze_count())
        yield count
        yield total
        yield longest
        yield frozen
