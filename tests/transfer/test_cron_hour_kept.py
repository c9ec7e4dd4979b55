"""The hourly cron run is not lost to a busy lease or a failed run.

CI (a loaded machine) once saw the 11:00 run never happen. A cron run that found the lease held (a manual
run, a deadline run, another process's run) or that failed (a database error) used to move on to the next
hour: the leads due at 11:00 waited until 12:00, the very delay the hourly job exists to bound. The hour is
now kept until a full run that started at or after it has happened — this scheduler's, or another's (then
no second run is made for it).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from support import Api, wait_for

from leadpush.transfer import scheduler as scheduler_module
from leadpush.transfer.engine import acquire_lease, release_lease
from leadpush.transfer.models import TransferRun
from leadpush.transfer.scheduler import TransferScheduler

SHANGHAI = ZoneInfo("Asia/Shanghai")
OTHER = "another-process:1:abc123"
BUSY = "另一个自动流转正在运行"
pytestmark = pytest.mark.slow  # waits for the scheduler


def _cron_runs(api: Api) -> list[tuple[str, bool]]:
    """(start time in Shanghai, finished) of every cron run."""
    with api.ctx.db.read() as s:
        rows = s.execute(select(TransferRun.started_at, TransferRun.finished_at).where(TransferRun.trigger == "cron"))
        return [(started.astimezone(SHANGHAI).strftime("%H:%M:%S"), done is not None) for started, done in rows]


def _just_before_eleven(api: Api, stack) -> TransferScheduler:  # noqa: ANN001
    """Set the clock to 10:59:58 tomorrow; return the scheduler once it waits for 11:00 (after a catch-up run
    for the jump forward, if the hour it waited for was before it)."""
    tomorrow = datetime.now(SHANGHAI).date() + timedelta(days=1)
    eleven = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 11, 0, tzinfo=SHANGHAI)
    api.ctx.clock.set(eleven - timedelta(seconds=2))
    api.nudge()
    scheduler: TransferScheduler = stack[1].server.config.app.state.runtime.scheduler
    wait_for(lambda: scheduler.planned == eleven)
    return scheduler


def _eleven_runs(api: Api) -> int:
    return sum(1 for started, _ in _cron_runs(api) if started == "11:00:00")


def test_cronkept_an_hour_that_finds_the_lease_held_runs_when_it_is_free(api: Api, stack, caplog) -> None:
    caplog.set_level(logging.INFO, logger=scheduler_module.__name__)
    _just_before_eleven(api, stack)
    assert acquire_lease(api.ctx, OTHER, api.ctx.clock.now())  # a manual run, say, that moves nothing new
    api.nudge(seconds=2)
    wait_for(lambda: BUSY in caplog.text)
    assert _eleven_runs(api) == 0
    release_lease(api.ctx, OTHER)
    wait_for(lambda: _eleven_runs(api) == 1)


def test_cronkept_an_hour_another_scheduler_served_is_not_run_again(api: Api, stack, caplog) -> None:
    caplog.set_level(logging.INFO, logger=scheduler_module.__name__)
    scheduler = _just_before_eleven(api, stack)
    # Another process's scheduler fired on the hour first: it holds the lease and has written its run.
    eleven = api.ctx.clock.now() + timedelta(seconds=2)
    assert acquire_lease(api.ctx, OTHER, eleven)
    with api.ctx.db.write() as s:
        s.add(TransferRun(trigger="cron", started_at=eleven, details={"team": None}))
    api.nudge(seconds=2)
    wait_for(lambda: BUSY in caplog.text)
    release_lease(api.ctx, OTHER)
    # The scheduler has moved on to 12:00 (its next planned wake-up), without a second run for 11:00.
    wait_for(lambda: scheduler.planned is not None and scheduler.planned.astimezone(SHANGHAI).hour == 12)
    assert _eleven_runs(api) == 1


def test_cronkept_a_failed_hour_is_tried_again(api: Api, stack, monkeypatch) -> None:
    _just_before_eleven(api, stack)
    real = scheduler_module.run_transfer
    failures: list[str] = []

    def flaky(ctx, trigger, **kwargs):  # noqa: ANN001, ANN202 — the database drops the first 11:00 attempt
        if trigger == "cron" and not failures:
            failures.append(trigger)
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
        return real(ctx, trigger, **kwargs)

    monkeypatch.setattr(scheduler_module, "run_transfer", flaky)
    api.nudge(seconds=2)
    wait_for(lambda: failures)
    wait_for(lambda: _eleven_runs(api) == 1)
