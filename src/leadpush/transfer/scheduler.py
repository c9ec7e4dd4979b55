"""The scheduler role: the hourly cron (`0 * * * *` in LEADPUSH_TIMEZONE) and exact per-lead deadlines.

Cron times come from APScheduler's CronTrigger; the waiting is ours, against the injectable clock, so
tests move time instead of sleeping to the hour. Between cron runs the scheduler sleeps until the
earliest stored warning or deadline (re-reading it whenever a commit wakes it with a moment earlier than
that, or one it does not know, and at least every `MAX_SLEEP` seconds for changes made by other processes
without a wake-up). A cron hour is kept until a full run has started at or after it: one that finds the
lease held or fails is tried again (backing off to MAX_SLEEP), unless another process's scheduler (or a
deadline or manual run of every team) started one meanwhile — then that run served the hour.

The first-contact ladder's steps (leadpush.sla) ride on the same wait: the earliest `sla_next_at` is one
more stored deadline, and due steps run (each lead in its own transaction, claimed by a conditional
update, so once across schedulers) without the transfer lease. Follow-up reminders (leadpush.leads.reminders)
ride on it the same way: the earliest `follow_up_remind_at` is one more stored deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from functools import cache

from anyio import to_thread
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from leadpush.context import AppContext
from leadpush.leads.reminders import earliest_reminder_query, run_due_reminders
from leadpush.sla.engine import earliest_step_query, run_due_steps
from leadpush.transfer.deadlines import earliest_pending_queries
from leadpush.transfer.engine import RunReport, TransferBusy, run_transfer, tell_untold_runs
from leadpush.transfer.models import TransferRun

log = logging.getLogger(__name__)

CRON = "0 * * * *"
MAX_SLEEP = 30.0
MIN_SLEEP = 0.05
BUSY_BACKOFF = 2.0
READ_INTERVAL = 0.25
# How often to look for automatic-transfer runs that died before telling anyone of their moves.
UNTOLD_CHECK_SECONDS = 10.0


def cron_trigger(ctx: AppContext) -> CronTrigger:
    return CronTrigger.from_crontab(CRON, timezone=ctx.settings.tz)


def next_cron_after(trigger: CronTrigger, now: datetime) -> datetime:
    """The first fire time strictly after `now`.

    APScheduler's answer includes `now` itself; a run that starts on the hour would then be due again at
    every look until the clock moves on (under a coarse or stopped clock, a run every READ_INTERVAL).
    """
    fire = trigger.get_next_fire_time(None, now + timedelta(microseconds=1))
    assert fire is not None
    return fire


@cache
def _earliest_statement() -> Select[datetime | None, datetime | None, datetime | None, datetime | None]:
    due, warn = earliest_pending_queries()
    return select(
        due.scalar_subquery(),
        warn.scalar_subquery(),
        earliest_step_query().scalar_subquery(),
        earliest_reminder_query().scalar_subquery(),
    )


def earliest_moments(session: Session) -> tuple[datetime | None, datetime | None, datetime | None]:
    """(`earliest_pending`, `earliest_step`, `earliest_reminder`) in one statement: the scheduler reads them
    after commits, up to every READ_INTERVAL, so four statements a look were a cost of every assignment."""
    due, warn, step, remind = session.execute(_earliest_statement()).one()
    candidates = [t for t in (due, warn) if t is not None]
    return (min(candidates) if candidates else None), step, remind


class TransferScheduler:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.trigger = cron_trigger(ctx)
        self._event = asyncio.Event()
        self._stopping = False
        self.runs: list[str] = []  # triggers of runs this scheduler started (for logs and tests)
        self.reads = 0  # looks at the stored deadlines (for tests)
        # When it next wakes by itself (cron hour or earliest stored moment), while it waits; None otherwise.
        self.planned: datetime | None = None
        self.pause = 0.0  # how long (seconds) the current or last wait was to last at most (for tests)

    def wake(self, earliest: datetime | None = None) -> None:
        """A commit wrote stored moments, the earliest `earliest` (None: not known). Re-read them only if that
        may be before the next wake-up planned: a deadline hours away (every assignment writes one) is read
        when its turn comes, and the MAX_SLEEP re-read covers whatever no wake-up announced."""
        planned = self.planned
        try:
            later = earliest is not None and planned is not None and earliest >= planned
        except TypeError:  # a naive moment beside an aware one: do not guess
            later = False
        if not later:
            self._event.set()

    def _earliest(self) -> tuple[datetime | None, datetime | None, datetime | None]:
        """The earliest transfer deadline or warning, the earliest first-contact step and follow-up reminder."""
        self.reads += 1
        with self.ctx.db.read() as session:
            return earliest_moments(session)

    def _served(self, fire: datetime) -> bool:
        """Whether a full run (every team, not a dry run) started at or after the cron time `fire`: another
        process's scheduler, which took the lease first, or a deadline or manual run that began meanwhile."""
        try:
            with self.ctx.db.read() as session:
                details = session.scalars(
                    select(TransferRun.details).where(TransferRun.started_at >= fire, TransferRun.dry_run.is_(False))
                ).all()
        except Exception:
            log.exception("读取自动流转运行记录失败")
            return False
        return any(not (d or {}).get("team") for d in details)

    async def _run_reminders(self) -> None:
        try:
            await to_thread.run_sync(lambda: run_due_reminders(self.ctx))
        except Exception:
            log.exception("跟进提醒失败")
            await asyncio.sleep(BUSY_BACKOFF)

    async def _run_steps(self) -> None:
        try:
            await to_thread.run_sync(lambda: run_due_steps(self.ctx))
        except Exception:
            log.exception("首次联系升级步骤失败")
            await asyncio.sleep(BUSY_BACKOFF)

    async def _run(self, trigger: str) -> RunReport | None:
        try:
            report = await to_thread.run_sync(lambda: run_transfer(self.ctx, trigger))
        except TransferBusy:
            log.info("另一个自动流转正在运行，本次（%s）稍后再看", trigger)
            return None
        except Exception:
            log.exception("自动流转（%s）失败", trigger)
            return None
        self.runs.append(trigger)
        return report

    async def _tell_untold(self) -> None:
        try:
            await to_thread.run_sync(lambda: tell_untold_runs(self.ctx))
        except Exception:
            log.exception("补发中断运行的流转通知失败")

    async def run(self) -> None:
        next_cron = next_cron_after(self.trigger, self.ctx.clock.now())
        last_look = 0.0
        next_untold_check = 0.0
        cron_retry = BUSY_BACKOFF
        while not self._stopping:
            if time.monotonic() >= next_untold_check:
                next_untold_check = time.monotonic() + UNTOLD_CHECK_SECONDS
                await self._tell_untold()
            # Commits that wrote an earlier moment wake us; under load, look at most every READ_INTERVAL.
            pause = READ_INTERVAL - (time.monotonic() - last_look)
            if pause > 0:
                await asyncio.sleep(pause)
            last_look = time.monotonic()
            self._event.clear()
            now = self.ctx.clock.now()
            earlier = next_cron_after(self.trigger, now)
            if earlier < next_cron:
                next_cron = earlier  # the clock was set back: do not wait for a fire time that moved away
            if now >= next_cron:
                ran = await self._run("cron")
                if ran is not None:
                    # The next hour after the run's start (a fire time it already covered is not served again),
                    # not after its end: an hour that struck during a long run is caught up once.
                    next_cron = next_cron_after(self.trigger, max(now, ran.started_at))
                    cron_retry = BUSY_BACKOFF
                elif await to_thread.run_sync(self._served, next_cron):
                    next_cron = next_cron_after(self.trigger, now)  # another scheduler's run served the hour
                    cron_retry = BUSY_BACKOFF
                else:
                    # Busy (a manual or deadline run) or failed: the hour is kept and tried again, never skipped.
                    await asyncio.sleep(cron_retry)
                    cron_retry = min(MAX_SLEEP, cron_retry * 2)
                continue
            try:
                earliest, step_at, remind_at = await to_thread.run_sync(self._earliest)
            except Exception:
                log.exception("读取最近的流转截止时间失败")
                earliest = step_at = remind_at = None
            steps_due = step_at is not None and now >= step_at
            if steps_due:
                await self._run_steps()
            reminders_due = remind_at is not None and now >= remind_at
            if reminders_due:
                await self._run_reminders()
            if earliest is not None and now >= earliest:
                if await self._run("deadline") is None:
                    await asyncio.sleep(BUSY_BACKOFF)
                continue
            if steps_due or reminders_due:
                continue
            target = min(t for t in (next_cron, earliest, step_at, remind_at) if t is not None)
            # Not past the next look for runs that died untold: their people hear within UNTOLD_CHECK_SECONDS.
            until_untold = next_untold_check - time.monotonic()
            delay = max(MIN_SLEEP, min(MAX_SLEEP, until_untold, (target - now).total_seconds()))
            self.planned = target
            self.pause = delay
            try:
                await asyncio.wait_for(self._event.wait(), timeout=delay)
            except TimeoutError:
                pass
            self.planned = None

    async def stop(self) -> None:
        self._stopping = True
        self._event.set()
