"""The delivery engine: claim due deliveries under a lease, send outside any transaction, record.

Claims are short write transactions (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several workers
never take the same row; SQLite has a single writer). Each claim bumps `attempts`, which doubles as a
fencing token: an outcome is recorded only if nobody re-claimed the row meanwhile, and names the
claiming worker (`lease_holder`). A worker that dies mid-send leaves its rows `sending`; another worker
takes them again as soon as the holder's heartbeat has stopped (notify/workers.py), or at the latest
when the lease runs out. That re-send is the one case where a channel can see a delivery twice (see
docs/reliability.md), and it is bounded by what the dead worker had in flight (its concurrency).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from anyio import to_thread
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.db import Database, rows_changed
from leadpush.notify.channels.base import Channel, DeliveryJob, Recipient, SendResult
from leadpush.notify.claimrules import decide
from leadpush.notify.digest import fold, folded_notes
from leadpush.notify.fallback import Claimed, read_at_claim
from leadpush.notify.history import add_attempt, skipped_at_claim
from leadpush.notify.ledger import INACTIVE
from leadpush.notify.metrics import Metrics
from leadpush.notify.models import Delivery, Notification
from leadpush.notify.workers import Heartbeat
from leadpush.users.models import User

log = logging.getLogger(__name__)


# The longest a channel may ask to wait (a daily quota waits for midnight); anything longer, or not
# a finite positive number, is a bug and must not overflow a datetime or park a delivery for years.
MAX_RETRY_AFTER = 86400.0


def backoff_seconds(
    attempts: int, base: float, cap: float, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, never below retry_after."""
    raw = min(cap, base * (2 ** max(0, min(attempts, 60) - 1)))
    jittered = raw / 2 + (rng or random).uniform(0, raw / 2)
    if retry_after is None or not math.isfinite(retry_after) or retry_after <= 0:
        return jittered
    return max(jittered, min(retry_after, MAX_RETRY_AFTER))


def due_condition(now: datetime, dead_workers: Collection[str] = ()):  # noqa: ANN201 - SQL expression
    """Due: pending or failed and its time has come; or `sending` by a worker that is gone (lease ran out,
    or the holder's heartbeat stopped)."""
    abandoned = Delivery.lease_until < now
    if dead_workers:
        abandoned = or_(abandoned, Delivery.lease_holder.in_(sorted(dead_workers)))
    return or_(
        and_(Delivery.status.in_(("pending", "failed")), Delivery.next_attempt_at <= now),
        and_(Delivery.status == "sending", abandoned),
    )


def claim_due_deliveries(
    db: Database,
    now: datetime,
    lease_seconds: float,
    limit: int,
    holder: str | None = None,
    dead_workers: Collection[str] = (),
    settings: Settings | None = None,
) -> list[DeliveryJob]:
    """Take up to `limit` due deliveries for this worker (`holder`), under a lease.

    With `settings`, the claim-time rules (notify.claimrules: expiry, quiet hours, digest windows) run
    first, then each claimed push carries what waits for the same person and channel (notify.digest.fold).
    A carrier's job has the notes it carries (`folded`), whether folded now or before (a retry).
    """
    return claim_batch(db, now, lease_seconds, limit, holder, dead_workers, settings).jobs


@dataclass(frozen=True)
class Claim:
    """What one claim took (`jobs`), and whether it found as many due rows as it asked for (`full`: more may
    be due; rows it skipped or held at claim time count, so `full` can hold with fewer jobs than asked)."""

    jobs: list[DeliveryJob]
    full: bool
    settled: list[str] = field(default_factory=list)


def claim_batch(
    db: Database,
    now: datetime,
    lease_seconds: float,
    limit: int,
    holder: str | None = None,
    dead_workers: Collection[str] = (),
    settings: Settings | None = None,
    settle: Sequence[tuple[DeliveryJob, SendResult, datetime]] = (),
    ctx: AppContext | None = None,
) -> Claim:
    """`claim_due_deliveries`, saying also whether the claim found `limit` due rows. With `settle` (and the
    `ctx`), records those outcomes (each with when it was known) first, in the same transaction (`Claim.settled`:
    their statuses)."""
    with db.write() as session:
        settled = [_record_one(ctx, session, job, result, when) for job, result, when in settle] if ctx else []
        # Whether each recipient is still active is read with the due rows (one statement, not two).
        query = (
            select(Delivery.id, User.active)
            .outerjoin(User, User.id == Delivery.recipient_id)
            .where(due_condition(now, dead_workers))
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(limit)
        )
        if db.is_postgres:
            query = query.with_for_update(skip_locked=True, of=Delivery)
        due = session.execute(query).all()
        full = len(due) >= limit
        ids = skip_inactive(session, [d for d, _ in due], {d for d, active in due if active is False}, now, holder)
        if settings is not None and ids:
            ids = decide(session, ids, now, settings)
            ids = fold(session, ids, now, settings, lock=db.is_postgres)
        if not ids:
            return Claim([], full, settled)
        lease_until = now + timedelta(seconds=lease_seconds)
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(
                status="sending",
                lease_until=lease_until,
                lease_holder=holder,
                attempts=Delivery.attempts + 1,
                hold_reason=None,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        # Plain columns, not ORM entities: a job needs values, and loading three objects a row cost more CPU
        # than the statement (issue 17).
        rows = session.execute(
            select(
                Delivery.id,
                Delivery.channel,
                Delivery.attempts,
                Delivery.folds,
                Notification.id,
                Notification.prev_id,
                Notification.kind,
                Notification.title,
                Notification.body,
                Notification.payload,
                Notification.created_at,
                Notification.read_at,
                User.id,
                User.name,
                User.wechat_openid,
                User.wecom_userid,
            )
            .join(Notification, Notification.id == Delivery.notification_id)
            .join(User, User.id == Delivery.recipient_id)
            .where(Delivery.id.in_(ids))
            .order_by(Notification.id)
        ).all()
        # A digest carries notes (notify/digest.py); rebuilt from `folds` on every claim, so a carrier taken
        # over after a crash, or retried by an admin, sends the same digest.
        notes = folded_notes(session, (n for row in rows for n in row[3] or []))
        # The send-time fallback's chain and sibling deliveries, for all of them at once (notify.fallback).
        at_claim = (
            read_at_claim(settings, session, [Claimed(row[0], row[4], row[1], row[6], row[12]) for row in rows])
            if settings is not None
            else {}
        )
        jobs = [
            DeliveryJob(
                delivery_id=d_id,
                channel=channel,
                attempts=attempts,
                lease_until=lease_until,
                notification_id=n_id,
                prev_id=prev_id,
                kind=kind,
                title=title,
                body=body,
                payload=payload,
                created_at=created_at,
                read_at=read_at,
                recipient=Recipient(u_id, u_name, openid, wecom_userid),
                lease_holder=holder,
                folded=tuple(notes[i] for i in sorted(set(folds or [])) if i in notes),
                claimed_at=now,
                chain=at_claim[d_id][0] if d_id in at_claim else None,
                siblings=at_claim[d_id][1] if d_id in at_claim else None,
            )
            for (
                d_id,
                channel,
                attempts,
                folds,
                n_id,
                prev_id,
                kind,
                title,
                body,
                payload,
                created_at,
                read_at,
                u_id,
                u_name,
                openid,
                wecom_userid,
            ) in rows
        ]
        return Claim(jobs, full, settled)


def skip_inactive(session: Session, ids: list[int], inactive: set[int], now: datetime, holder: str | None) -> list[int]:
    """Deliveries due for a user deactivated since they were planned (`inactive`, read with the claim, so one
    deactivated before this claim gets nothing more) are skipped, not sent: returns the rest of `ids`. Each
    skip is kept in the delivery's attempt history, by the claiming worker `holder`."""
    if inactive:
        skipped_at_claim(session, sorted(inactive), now, INACTIVE, holder)
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(inactive))
            .values(status="skipped", last_error=INACTIVE, lease_until=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    return [i for i in ids if i not in inactive]


def record_outcome(ctx: AppContext, job: DeliveryJob, result: SendResult, now: datetime) -> str:
    """Write what happened; returns the delivery's new status ("lost" if the lease was taken over).

    The try joins the delivery's attempt history in the same transaction, only when this worker still held
    the claim (a lost claim's answer belongs to nobody: the new holder's try is the one that counts).
    """
    return record_outcomes(ctx, [(job, result)], now)[0]


def record_outcomes(ctx: AppContext, outcomes: Sequence[tuple[DeliveryJob, SendResult]], now: datetime) -> list[str]:
    """`record_outcome` for several jobs in one write transaction (the dispatcher records together what
    finished together: one commit instead of one per delivery); each delivery's new status, in order.

    Each job is fenced on its own: a taken-over claim is "lost" and leaves no history, the others are
    recorded all the same.
    """
    with ctx.db.write() as session:
        return [_record_one(ctx, session, job, result, now) for job, result in outcomes]


def _record_one(ctx: AppContext, session: Session, job: DeliveryJob, result: SendResult, now: datetime) -> str:
    s = ctx.settings
    values: dict[str, object] = {"updated_at": now, "lease_until": None}
    if result.outcome == "sent":
        values.update(status="sent", sent_at=now, provider_id=result.provider_id, last_error=None)
    elif result.outcome == "skipped":
        values.update(status="skipped", last_error=result.detail)
    elif result.outcome == "permanent":
        values.update(status="dead", last_error=result.detail)
    elif job.attempts >= s.delivery_max_attempts:
        values.update(status="dead", last_error=f"已重试 {job.attempts} 次仍失败：{result.detail}")
    else:
        delay = backoff_seconds(job.attempts, s.delivery_backoff_base, s.delivery_backoff_max, result.retry_after)
        values.update(status="failed", last_error=result.detail, next_attempt_at=now + timedelta(seconds=delay))
    done = session.execute(
        update(Delivery)
        .where(Delivery.id == job.delivery_id, Delivery.status == "sending", Delivery.attempts == job.attempts)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if rows_changed(done) != 1:
        return "lost"
    status = str(values["status"])
    add_attempt(
        session,
        job.delivery_id,
        job.attempts,
        result,
        status,
        started_at=claimed_at(job, s, now),
        finished_at=now,
        worker=job.lease_holder,
    )
    return status


def claimed_at(job: DeliveryJob, settings: Settings, now: datetime) -> datetime:
    """When the job's claim happened: carried by the job, or (a job built elsewhere) its lease's start."""
    if job.claimed_at is not None:
        return job.claimed_at
    return min(now, job.lease_until - timedelta(seconds=settings.delivery_lease_seconds))


# How long a sent in-app delivery may wait to be recorded by the next claim's transaction (see Dispatcher).
SETTLE_WITHIN = 0.2


class Dispatcher:
    """Runs on the event loop: claims, sends with bounded concurrency, records, sleeps until woken.

    Outcomes are recorded together: whatever finished while the previous record transaction ran is written
    in the next one (one commit for a claim's deliveries instead of one each). A sent in-app delivery (a
    publish that clients also catch up on by id) is not given a transaction of its own at all: it is
    recorded by the next claim's, which under assignment load comes within milliseconds, and otherwise
    within SETTLE_WITHIN (the loop wakes for it). Should the worker die in between, the delivery is taken
    over when its holder's heartbeat stops and published once more: clients drop a message id they have.
    Every other outcome is recorded as soon as it is known (a re-sent WeChat message is a real duplicate).

    A finished job wakes the loop for another claim only when there may be more to take (the last claim was
    capped by capacity or by its limit) and half the capacity is free again (a backlog is claimed in batches,
    not a claim per finished send), or when its outcome may have made something due (anything but "sent": a
    retry, a fallback row); otherwise the next commit's wake-up, or the poll, brings the next claim.
    """

    def __init__(
        self, ctx: AppContext, channels: Mapping[str, Channel], metrics: Metrics, heartbeat: Heartbeat | None = None
    ) -> None:
        self.ctx = ctx
        self.heartbeat = heartbeat
        self.channels = channels
        self.metrics = metrics
        self._event = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # The last claim may have left due rows behind (no free capacity, or it took as many as it asked for).
        self._capped = False
        self._outcomes: list[tuple[DeliveryJob, SendResult, asyncio.Future[str]]] = []
        self._recorder: asyncio.Task[None] | None = None
        # Sent in-app deliveries waiting for the next claim's transaction, with their send time.
        self._unsettled: list[tuple[DeliveryJob, SendResult, datetime, float]] = []
        self._settle_timer: asyncio.TimerHandle | None = None
        self._claiming = 0  # the limit of the claim under way (its jobs are not in flight yet)
        # With more due than fits in flight, the free capacity is refilled once this much is free, not after
        # every finished send: a claim runs the claim-time rules (a dozen statements) whatever its size, and a
        # claim per finished send cost more than the sends themselves in a drain (issue 17). On SQLite a claim
        # also holds the one write lock every send's credit and outcome wait for: half the capacity; on
        # PostgreSQL claims and sends overlap, and a fuller capacity keeps more round trips in flight: a quarter.
        s = ctx.settings
        part = 2 if ctx.db.is_sqlite else 4
        self._refill_at = max(1, min(s.delivery_concurrency, s.delivery_batch_size) // part)

    def wake(self) -> None:
        """Call on the event loop (bus handlers run there)."""
        self._event.set()

    def wake_threadsafe(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._event.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        s = self.ctx.settings
        while not self._stopping:
            self._event.clear()
            free = s.delivery_concurrency - len(self._inflight)
            jobs: list[DeliveryJob] = []
            self._capped = free <= 0
            unsettled, self._unsettled = self._unsettled, []
            if unsettled and self._settle_timer is not None:
                self._settle_timer.cancel()  # this pass records them
                self._settle_timer = None
            if free > 0:
                self._claiming = min(free, s.delivery_batch_size)
                self.metrics.claims.inc()
                try:
                    claim = await to_thread.run_sync(
                        partial(
                            claim_batch,
                            self.ctx.db,
                            self.ctx.clock.now(),
                            s.delivery_lease_seconds,
                            min(free, s.delivery_batch_size),
                            self.heartbeat.id if self.heartbeat else None,
                            self.heartbeat.dead_workers() if self.heartbeat else (),
                            s,
                            settle=[(job, result, when) for job, result, when, _ in unsettled],
                            ctx=self.ctx,
                        )
                    )
                except Exception:
                    self._claiming = 0
                    log.exception("领取待发送投递失败，稍后重试")
                    self._unsettled[:0] = unsettled  # the next pass, after the pause, records them
                    await asyncio.sleep(1.0)
                    continue
                self._claiming = 0
                self._settled(unsettled, claim.settled)
                jobs = claim.jobs
                self._capped = claim.full
            elif unsettled:
                self._settled(unsettled, await self._record_batch([(job, result) for job, result, _, _ in unsettled]))
            for job in jobs:
                task = asyncio.create_task(self._process(job))
                self._inflight.add(task)
                task.add_done_callback(self._done)
            if jobs and len(jobs) == free and len(self._inflight) < s.delivery_concurrency:
                continue  # more may be due right now
            try:
                await asyncio.wait_for(self._event.wait(), timeout=s.delivery_poll_interval)
            except TimeoutError:
                pass

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if task.cancelled() or task.exception() is not None:
            self._event.set()
        elif self._capped and self._free() >= self._refill_at:
            self._event.set()

    def _free(self) -> int:
        """Capacity neither in flight nor being filled by the claim under way."""
        return self.ctx.settings.delivery_concurrency - len(self._inflight) - self._claiming

    async def _process(self, job: DeliveryJob) -> None:
        channel = self.channels.get(job.channel)
        started = time.perf_counter()
        if channel is None:
            result = SendResult.skipped("该渠道未启用")
        else:
            # No timeout around the whole send: cut after the platform accepted a message (a slow token
            # refresh, a slow credit settlement), it would be retried and arrive twice. Each step bounds
            # itself instead (HTTP timeouts; no send is started that could not finish within the lease).
            try:
                result = await channel.send(job)
            except Exception as exc:  # noqa: BLE001 - a channel bug must not kill the worker
                log.exception("渠道 %s 发送异常", job.channel)
                result = SendResult.retry(f"发送异常：{type(exc).__name__}")
        elapsed = time.perf_counter() - started
        if job.channel == "inapp" and result.outcome == "sent" and not self._stopping:
            # One timer for whatever waits: a timer per claim that took the waiting ones kept several in flight,
            # each bringing a claim of its own (in a drain, a small claim every few milliseconds).
            if self._settle_timer is None:
                self._settle_timer = asyncio.get_running_loop().call_later(SETTLE_WITHIN, self._settle_due)
            self._unsettled.append((job, result, self.ctx.clock.now(), elapsed))
            return
        status = await self._record(job, result)
        self.metrics.observe_send(job.channel, status, elapsed)
        if status != "sent":
            # A retry, a fallback row (created by the channel wrapper), a lost claim: look again now.
            self._event.set()
        if status in ("failed", "dead"):
            log.warning("投递 %s（%s）%s：%s", job.delivery_id, job.channel, status, result.detail)

    def _settle_due(self) -> None:
        self._settle_timer = None
        self._event.set()

    def _settled(self, unsettled: list[tuple[DeliveryJob, SendResult, datetime, float]], statuses: list[str]) -> None:
        for (job, _, _, elapsed), status in zip(unsettled, statuses, strict=True):
            self.metrics.observe_send(job.channel, status, elapsed)

    async def _record(self, job: DeliveryJob, result: SendResult) -> str:
        """Record the outcome with whatever else finished meanwhile (see the class); its new status."""
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._outcomes.append((job, result, done))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_pending())
        return await done

    async def _record_pending(self) -> None:
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            try:
                statuses = await self._record_batch([(job, result) for job, result, _ in batch])
            except Exception:  # noqa: BLE001 - a bug here must not leave the jobs waiting for ever
                log.exception("记录投递结果失败")
                statuses = ["unrecorded"] * len(batch)
            for (_, _, done), status in zip(batch, statuses, strict=True):
                if not done.done():
                    done.set_result(status)

    async def _record_batch(self, outcomes: list[tuple[DeliveryJob, SendResult]]) -> list[str]:
        """Record outcomes, holding on to them through a database blip for as long as the earliest lease lasts.

        Giving up early would let the lease expire and the message be sent again although the channel
        answered; only a crash (or an outage longer than the lease) leaves that to happen.
        """
        earliest = min(job.lease_until for job, _ in outcomes)
        budget = (earliest - self.ctx.clock.now()).total_seconds() - 1.0
        deadline = time.monotonic() + max(0.0, budget)
        delay = 0.2
        while True:
            try:
                return await to_thread.run_sync(record_outcomes, self.ctx, outcomes, self.ctx.clock.now())
            except Exception as exc:  # noqa: BLE001
                ids = ", ".join(str(job.delivery_id) for job, _ in outcomes)
                if time.monotonic() + delay >= deadline or self._stopping:
                    log.error("记录投递结果失败，租约到期后将重新发送（投递 %s）：%s", ids, type(exc).__name__)
                    return ["unrecorded"] * len(outcomes)
                log.warning("记录投递结果失败，%.1f 秒后重试（投递 %s）", delay, ids)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def stop(self) -> None:
        self._stopping = True
        self._event.set()
        if self._settle_timer is not None:
            self._settle_timer.cancel()  # what waits is recorded below
            self._settle_timer = None
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=10)
        unsettled, self._unsettled = self._unsettled, []
        if unsettled:
            try:
                statuses = await to_thread.run_sync(
                    record_outcomes, self.ctx, [(job, result) for job, result, _, _ in unsettled], self.ctx.clock.now()
                )
            except Exception as exc:  # noqa: BLE001 - stopping: the lease runs out and they are published again
                log.warning("停止时记录站内投递结果失败：%s", type(exc).__name__)
            else:
                self._settled(unsettled, statuses)
