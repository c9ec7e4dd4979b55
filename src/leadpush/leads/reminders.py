"""Follow-up reminders (`followup_due`), run by the scheduler role at each lead's `follow_up_remind_at`.

The earliest stored reminder time is one more deadline the scheduler waits for (like the first-contact
ladder's steps). Each due reminder runs in its own short transaction, claimed by one conditional UPDATE
(the lead's plan, reminder time and owner as read) that clears `follow_up_remind_at`, so across several
schedulers it runs once, and a plan changed or a lead moved meanwhile is left to the next look.

The reminder goes to whoever owns the lead when it is due (the plan stays with the lead when it changes
hands); a lead in a pool gets none (its reminder is only cleared).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from leadpush.context import AppContext
from leadpush.db import rows_changed
from leadpush.leads.models import Customer
from leadpush.notify.ledger import NewNotification, write_notifications
from leadpush.perlead import run_due_per_lead
from leadpush.users.models import User

log = logging.getLogger(__name__)

BATCH = 200
# A reminder that failed (a bug, a database hiccup) is tried again this much later, not at every look.
RETRY_SECONDS = 60


def earliest_reminder_query() -> Select[datetime | None]:
    return select(func.min(Customer.follow_up_remind_at))


def earliest_reminder(session: Session) -> datetime | None:
    """The next moment a follow-up reminder is due (None: no plan is waiting for one)."""
    return session.scalar(earliest_reminder_query())


def due_reminders(session: Session, now: datetime, limit: int = BATCH) -> list[int]:
    return list(
        session.scalars(
            select(Customer.id)
            .where(Customer.follow_up_remind_at <= now)
            .order_by(Customer.follow_up_remind_at, Customer.id)
            .limit(limit)
        )
    )


def run_due_reminders(ctx: AppContext) -> int:
    """Send every follow-up reminder due by now, each lead in its own transaction; returns how many were sent."""
    return run_due_per_lead(ctx, due_reminders, remind, _retry_later, "跟进提醒")


def _retry_later(ctx: AppContext, customer_id: int, now: datetime) -> None:
    try:
        with ctx.db.write() as session:
            session.execute(
                update(Customer)
                .where(Customer.id == customer_id, Customer.follow_up_remind_at <= now)
                .values(follow_up_remind_at=now + timedelta(seconds=RETRY_SECONDS))
                .execution_options(synchronize_session=False)
            )
    except Exception:
        log.exception("推迟线索 %s 的跟进提醒失败", customer_id)


def remind(ctx: AppContext, session: Session, customer_id: int, now: datetime) -> bool:
    """Claim the lead's due reminder and tell its current owner; whether a reminder was written."""
    customer = session.get(Customer, customer_id)
    if customer is None or customer.follow_up_remind_at is None or customer.follow_up_remind_at > now:
        return False
    remind_at, planned, owner_id = customer.follow_up_remind_at, customer.next_follow_up_at, customer.owner_id
    owner_now = Customer.owner_id.is_(None) if owner_id is None else Customer.owner_id == owner_id
    plan_now = Customer.next_follow_up_at.is_(None) if planned is None else Customer.next_follow_up_at == planned
    claimed = session.execute(
        update(Customer)
        .where(Customer.id == customer.id, Customer.follow_up_remind_at == remind_at, owner_now, plan_now)
        .values(follow_up_remind_at=None)
        .execution_options(synchronize_session=False)
    )
    if not rows_changed(claimed) or owner_id is None or planned is None:
        return False  # changed meanwhile (the next look sees it as it is now), or nobody to remind
    owner = session.get_one(User, owner_id)
    write_notifications(session, ctx.settings, ctx.signals, [reminder(ctx, customer, owner, planned)], now)
    return True


def reminder(ctx: AppContext, c: Customer, owner: User, planned: datetime) -> NewNotification:
    tz = ctx.settings.tz
    local = planned.astimezone(tz)
    note = c.next_follow_up_note
    return NewNotification(
        recipient=owner,
        kind="followup_due",
        title=f"跟进提醒：客户「{c.name}」",
        body=f"计划 {local:%m-%d %H:%M} 跟进" + (f"：{note}" if note else ""),
        payload={
            "customerId": c.id,
            "customerName": c.name,
            "customerPhone": c.phone,
            "source": c.source,
            # The exact planned time (UTC): expiry compares it with the lead's plan when the reminder is sent.
            "plannedAt": planned.isoformat(),
            "note": note,
            # The time a subscribe message shows (time4): the planned time.
            "assignTime": local.isoformat(timespec="seconds"),
        },
        dedupe_key=f"followup_due:{c.id}:{planned.isoformat()}",
    )
