"""Prometheus metrics, one registry per process (no global state for tests to reset)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from leadpush.db import Database
from leadpush.notify.models import Delivery

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class LedgerCollector(Collector):
    """Pending deliveries and the age of the oldest, read from the ledger at scrape time."""

    def __init__(self, db: Database, now: Callable[[], datetime], ws_clients: Callable[[], int]) -> None:
        self.db = db
        self.now = now
        self.ws_clients = ws_clients

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pending = GaugeMetricFamily(
            "leadpush_deliveries_pending",
            "Deliveries not yet final, by channel and status",
            labels=["channel", "status"],
        )
        oldest = GaugeMetricFamily("leadpush_oldest_pending_seconds", "Age of the oldest unsent delivery")
        clients = GaugeMetricFamily("leadpush_websocket_clients", "WebSocket clients connected to this process")
        with self.db.read() as session:
            rows = session.execute(
                select(Delivery.channel, Delivery.status, func.count())
                .where(Delivery.status.in_(("pending", "sending", "failed")))
                .group_by(Delivery.channel, Delivery.status)
            ).all()
            first = session.scalar(
                select(func.min(Delivery.created_at)).where(Delivery.status.in_(("pending", "sending", "failed")))
            )
        for channel, status, count in rows:
            pending.add_metric([channel, status], count)
        age = 0.0
        if first is not None:
            first = first if first.tzinfo else first.replace(tzinfo=self.now().tzinfo)
            age = max(0.0, (self.now() - first).total_seconds())
        oldest.add_metric([], age)
        clients.add_metric([], self.ws_clients())
        yield pending
        yield oldest
        yield clients


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "leadpush_deliveries",
            "Delivery attempts by channel and resulting status",
            ["channel", "status"],
            registry=self.registry,
        )
        self.send_seconds = Histogram(
            "leadpush_send_seconds",
            "Time to send one delivery",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # A worker's claim transactions (each one a write transaction, found due rows or not): what waking
        # it costs. It is woken only by commits that leave it deliveries to send (runtime.py).
        self.claims = Counter(
            "leadpush_delivery_claims", "Claim transactions run by this worker", registry=self.registry
        )

    def observe_send(self, channel: str, status: str, seconds: float) -> None:
        self.deliveries.labels(channel, status).inc()
        self.send_seconds.labels(channel).observe(seconds)

    def observe_sends(self, channel: str, status: str, count: int) -> None:
        """`count` deliveries that took no time of their own (in-app deliveries pushed by their commit)."""
        self.deliveries.labels(channel, status).inc(count)
        histogram = self.send_seconds.labels(channel)
        for _ in range(count):
            histogram.observe(0.0)

    def watch_ledger(self, collector: LedgerCollector) -> None:
        self.registry.register(collector)
