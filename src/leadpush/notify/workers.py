"""Which dispatcher processes are alive, so that a killed one's claimed deliveries come back in seconds.

Each worker process has a row in `workers` and bumps its `beats` counter every HEARTBEAT_SECONDS,
from a thread of its own (a busy event loop must not make a live
process look dead). At each beat it also reads everyone else's counter and judges a worker dead once its
counter has not moved for DEAD_AFTER_SECONDS of the observer's own monotonic time, counted
only while the observer itself could reach the database. So clocks of different machines are never
compared, and after a database outage (when nobody could beat) everyone gets a fresh grace period. The
dispatcher may then take over a dead holder's `sending` deliveries without waiting out their lease.

SQLite without Redis is one process by contract (the embedded default): a worker starting there takes over
at once whatever its predecessor held when it died.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from leadpush.clock import Clock
from leadpush.db import Database, rows_changed
from leadpush.notify.models import Delivery, Worker

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.0
# Six missed beats: one slow beat (a loaded machine, a busy database) never makes a live worker look dead,
# and a killed worker's deliveries still come back within seconds (their lease is a minute).
DEAD_AFTER_SECONDS = 6.0
FORGET_AFTER = timedelta(days=1)  # rows of workers gone this long are deleted (their leases ran out long ago)


class Heartbeat:
    """This process's worker row, its heartbeat thread, and its view of which other workers are dead."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        sole_worker: bool,
        interval: float = HEARTBEAT_SECONDS,
        dead_after: float = DEAD_AFTER_SECONDS,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.db = db
        self.clock = clock
        self.interval = interval
        self.dead_after = dead_after
        self.sole_worker = sole_worker
        self._seen: dict[str, tuple[int, float]] = {}  # worker id -> (beats, when that count was first seen)
        self._healthy_since: float | None = None  # since when our own beats have been succeeding
        self._observed_at = -math.inf
        self._dead: frozenset[str] = frozenset()
        self._registered = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Register (taking over a dead predecessor's claims if this is the sole worker), then beat."""
        try:
            self._register()
        except Exception as exc:  # noqa: BLE001 - the beat thread registers once the database is back
            log.warning("注册 worker 失败，稍后重试：%s", type(exc).__name__)
        self._thread = threading.Thread(target=self._run, name="leadpush-heartbeat", daemon=True)
        self._thread.start()

    def _register(self) -> None:
        now = self.clock.now()
        with self.db.write() as session:
            session.execute(delete(Worker).where(Worker.heartbeat_at < now - FORGET_AFTER))
            if self.sole_worker:
                self._take_over_predecessors(session, now)
            session.add(self._row(now))
        self._registered = True

    def _row(self, now: datetime) -> Worker:
        return Worker(
            id=self.id, host=socket.gethostname()[:100], pid=os.getpid(), beats=0, started_at=now, heartbeat_at=now
        )

    def _take_over_predecessors(self, session: Session, now: datetime) -> None:
        released = rows_changed(
            session.execute(
                update(Delivery)
                .where(
                    Delivery.status == "sending",
                    or_(Delivery.lease_holder.is_(None), Delivery.lease_holder != self.id),
                )
                .values(lease_until=now - timedelta(seconds=1))
                .execution_options(synchronize_session=False)
            )
        )
        session.execute(delete(Worker).where(Worker.id != self.id))
        if released:
            log.warning("接管上一个进程退出时正在发送的 %d 条投递", released)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        """Bump our counter and look at everyone else's (one short write transaction)."""
        try:
            if not self._registered:
                self._register()
            with self.db.write() as session:
                now = self.clock.now()
                mine = rows_changed(
                    session.execute(
                        update(Worker)
                        .where(Worker.id == self.id)
                        .values(beats=Worker.beats + 1, heartbeat_at=now)
                        .execution_options(synchronize_session=False)
                    )
                )
                if not mine:
                    session.add(self._row(now))  # our row was removed (an operator, a test's wipe): reappear
                counts = {wid: beats for wid, beats in session.execute(select(Worker.id, Worker.beats))}
        except Exception as exc:  # noqa: BLE001 - a database outage: judge nobody until it is over
            with self._lock:
                if self._healthy_since is not None:
                    log.warning("worker 心跳写入失败（数据库不可用？）：%s", type(exc).__name__)
                self._healthy_since = None
                self._dead = frozenset()
            return
        counts.pop(self.id, None)
        self._observe(counts, time.monotonic())

    def _observe(self, counts: dict[str, int], now: float) -> None:
        with self._lock:
            if self._healthy_since is None:
                self._healthy_since = now
            seen: dict[str, tuple[int, float]] = {}
            for wid, beats in counts.items():
                previous = self._seen.get(wid)
                seen[wid] = previous if previous is not None and previous[0] == beats else (beats, now)
            self._seen = seen
            healthy_since = self._healthy_since
            self._dead = frozenset(
                wid for wid, (_, since) in seen.items() if now - max(since, healthy_since) >= self.dead_after
            )
            self._observed_at = now

    def dead_workers(self) -> frozenset[str]:
        """Workers judged dead at the last beat; none if that beat is not recent (no judgement is safe then)."""
        with self._lock:
            if time.monotonic() - self._observed_at > 2 * self.interval + 1:
                return frozenset()
            return self._dead

    def stop(self) -> None:
        """Stop beating, hand back what this worker still holds (sends it abandons) and leave the table."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        now = self.clock.now()
        try:
            with self.db.write() as session:
                session.execute(
                    update(Delivery)
                    .where(Delivery.status == "sending", Delivery.lease_holder == self.id)
                    .values(lease_until=now - timedelta(seconds=1))
                    .execution_options(synchronize_session=False)
                )
                session.execute(delete(Worker).where(Worker.id == self.id))
        except Exception as exc:  # noqa: BLE001 - then the others see the heartbeat stop
            log.warning("注销 worker 失败：%s", type(exc).__name__)
