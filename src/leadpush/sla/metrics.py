"""Speed-to-lead metrics: time to open and to first follow-up per team, and the ladder's steps.

One `SlaMetrics` per AppContext (no module state); each process's Runtime registers it in its registry.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

# From half a minute to three days: first contact is measured in minutes, neglect in days.
SPEED_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200)
NO_TEAM = "-"


class SlaMetrics(Collector):
    def __init__(self) -> None:
        self.time_to_open = Histogram(
            "leadpush_time_to_open_seconds",
            "From a lead's assignment to its owner first opening it",
            ["team"],
            buckets=SPEED_BUCKETS,
            registry=None,
        )
        self.time_to_first_follow_up = Histogram(
            "leadpush_time_to_first_follow_up_seconds",
            "From a lead's assignment to its owner's first follow-up",
            ["team"],
            buckets=SPEED_BUCKETS,
            registry=None,
        )
        self.steps = Counter("leadpush_sla_steps", "First-contact SLA steps run", ["step"], registry=None)
        for step in ("remind", "manager", "reassign"):
            self.steps.labels(step)

    def opened(self, team: str | None, seconds: float) -> None:
        self.time_to_open.labels(team or NO_TEAM).observe(max(0.0, seconds))

    def followed_up(self, team: str | None, seconds: float) -> None:
        self.time_to_first_follow_up.labels(team or NO_TEAM).observe(max(0.0, seconds))

    def step(self, name: str) -> None:
        self.steps.labels(name).inc()

    def collect(self) -> Iterable[Metric]:
        yield from self.time_to_open.collect()
        yield from self.time_to_first_follow_up.collect()
        yield from self.steps.collect()
