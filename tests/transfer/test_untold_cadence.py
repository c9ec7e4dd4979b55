"""Runs that died before telling anyone are looked for every UNTOLD_CHECK_SECONDS, also while nothing is due.

The scheduler looked for them only at the top of its loop, and with nothing due it slept MAX_SLEEP (30 s)
at a time: their people heard up to 30 s after the dead run's lease ran out, not the ~10 s its docstring and
the README promise (and a test of it took 26–29 s).
"""

from __future__ import annotations

from datetime import timedelta

from support import Api, wait_for

from leadpush.transfer.scheduler import UNTOLD_CHECK_SECONDS, TransferScheduler


def test_untold_an_idle_scheduler_waits_no_longer_than_the_next_untold_check(api: Api, stack) -> None:  # noqa: ANN001
    scheduler: TransferScheduler = stack[1].server.config.app.state.runtime.scheduler
    # One minute past an hour, nothing stored: the next thing due is the cron run, 59 minutes away.
    one_past = api.ctx.clock.now().replace(minute=1, second=0, microsecond=0) + timedelta(hours=1)
    api.ctx.clock.set(one_past)
    api.ctx.signals.notifications_committed(set())
    wait_for(lambda: scheduler.planned == one_past + timedelta(minutes=59))
    assert 0 < scheduler.pause <= UNTOLD_CHECK_SECONDS
