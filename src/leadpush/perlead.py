"""Per-lead scheduled work (first-contact ladder steps, follow-up reminders): everything due by now, each
lead in its own short transaction, a failed one put off and retried later instead of blocking the rest."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session

from leadpush.context import AppContext

log = logging.getLogger(__name__)


def run_due_per_lead(
    ctx: AppContext,
    due: Callable[[Session, datetime], list[int]],
    step: Callable[[AppContext, Session, int, datetime], object],
    retry_later: Callable[[AppContext, int, datetime], None],
    what: str,
) -> int:
    """Run `step` for every lead `due` lists by now, until none is left; returns how many steps did something
    (a truthy result). A lead whose step raises is logged and handed to `retry_later`; when every due lead
    failed, it returns rather than spin (the next look tries again)."""
    done = 0
    while True:
        now = ctx.clock.now()
        with ctx.db.read() as session:
            ids = due(session, now)
        if not ids:
            return done
        progressed = 0
        for customer_id in ids:
            try:
                with ctx.db.write() as session:
                    result = step(ctx, session, customer_id, now)
            except Exception:
                log.exception("线索 %s 的%s失败，稍后重试", customer_id, what)
                retry_later(ctx, customer_id, now)
                continue
            progressed += 1
            done += bool(result)
        if progressed == 0:
            return done
