"""Follow-up plans (下次跟进): when a lead's owner means to contact it next, and the day's list of them.

A plan is three columns on the lead: the planned time, a short note, and the time its reminder is due
(`follow_up_remind_at`, cleared once the reminder went out; see `leads.reminders`). Who may set one is who
may record a follow-up (the owner, their manager, an admin); a lead in a pool has no owner to remind, so it
has no plan (entering a pool clears it). The plan belongs to the lead, not to the person: when the lead
changes hands the plan stays, and its reminder goes to whoever owns the lead when it is due.

Setting a plan is not an edit an assignment relies on: it leaves the lead's `version` alone, so a manager
assigning the lead meanwhile is not refused as if the lead had been changed under them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from leadpush.context import AppContext
from leadpush.db import after_commit
from leadpush.errors import ApiError, forbidden
from leadpush.leads.models import Customer
from leadpush.leads.schemas import FollowUpPlanItem, FollowUpPlanList
from leadpush.notify.signals import deadline_wake, deadlines_written
from leadpush.permissions import team_members
from leadpush.users.models import User
from leadpush.users.service import users_by_id

# The furthest ahead a plan may be: a year (366 days, so the same date next year is always allowed).
MAX_AHEAD = timedelta(days=366)
# The most leads one day's list answers (a team's day rarely has more; `truncated` says when it does).
LIST_LIMIT = 500

Scope = Literal["mine", "team"]


def plan_time(ctx: AppContext, at: datetime, now: datetime) -> datetime:
    """The planned time as stored (aware UTC), or a 422: a time without an offset is read in LEADPUSH_TIMEZONE;
    a time in the past (before the current minute: a console picks minutes) or more than a year ahead is refused."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=ctx.settings.tz)
    at = at.astimezone(now.tzinfo)
    if at < now.replace(second=0, microsecond=0):
        raise ApiError(422, "follow_up_in_past", "下次跟进时间不能早于现在")
    if at > now + MAX_AHEAD:
        raise ApiError(422, "follow_up_too_far", "下次跟进时间不能晚于一年以后")
    return at


def check_owned(customer: Customer) -> None:
    if customer.owner_id is None:
        raise ApiError(409, "customer_in_pool", "公海中的线索没有负责人，不能设置跟进计划，请先领取或分配")


def write_plan(
    ctx: AppContext, session: Session, customer: Customer, at: datetime | None, note: str | None, now: datetime
) -> None:
    """Store the plan (None: clear it) in the caller's transaction; the scheduler re-reads its earliest reminder
    after the commit. The lead's row must be locked (read with `lock=True`) by the caller."""
    values: dict[str, object] = {
        "next_follow_up_at": at,
        "next_follow_up_note": note if at is not None else None,
        "follow_up_remind_at": at,
        "updated_at": now,
    }
    session.execute(
        update(Customer).where(Customer.id == customer.id).values(**values).execution_options(synchronize_session=False)
    )
    for key, value in values.items():
        set_committed_value(customer, key, value)
    deadlines_written(session, [at])
    signals = ctx.signals
    # Nothing for a worker; the schedulers re-read only if the reminder (or another moment the transaction noted)
    # comes before their next wake-up.
    after_commit(session, lambda: signals.notifications_committed(set(), wake=deadline_wake(session, False)))


def plan_fulfilled(ctx: AppContext, customer: Customer, now: datetime) -> bool:
    """Whether a follow-up recorded `now` without a new plan fulfils the lead's plan: one due today (in
    LEADPUSH_TIMEZONE) or earlier is done; one for a later day is kept (the call was about something else)."""
    planned = customer.next_follow_up_at
    if planned is None:
        return False
    tz = ctx.settings.tz
    return planned.astimezone(tz).date() <= now.astimezone(tz).date()


@dataclass(frozen=True)
class DayBounds:
    day: date
    start: datetime
    end: datetime


def day_bounds(ctx: AppContext, day: date | None, now: datetime) -> DayBounds:
    tz = ctx.settings.tz
    day = day or now.astimezone(tz).date()
    start = datetime.combine(day, time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return DayBounds(day, start.astimezone(now.tzinfo), end.astimezone(now.tzinfo))


def list_day(ctx: AppContext, session: Session, actor: User, day: date | None, scope: Scope) -> FollowUpPlanList:
    """The leads planned for `day` (default today) plus the overdue ones (planned before it and before now, not
    followed up since), by planned time: the caller's own (`mine`), or their team's (`team`, managers: their
    team; admins: everyone)."""
    now = ctx.clock.now()
    bounds = day_bounds(ctx, day, now)
    query = select(Customer).where(Customer.owner_id.is_not(None), Customer.next_follow_up_at.is_not(None))
    if scope == "mine":
        query = query.where(Customer.owner_id == actor.id)
    elif actor.role == "manager":
        query = query.where(Customer.owner_id.in_(select(User.id).where(team_members(actor))))
    elif actor.role != "admin":
        raise forbidden("只有经理和管理员可以查看团队的跟进计划")
    overdue_before = min(bounds.start, now)
    not_followed_since = or_(
        Customer.last_follow_up_at.is_(None), Customer.last_follow_up_at < Customer.next_follow_up_at
    )
    query = query.where(
        or_(
            and_(Customer.next_follow_up_at >= bounds.start, Customer.next_follow_up_at < bounds.end),
            and_(Customer.next_follow_up_at < overdue_before, not_followed_since),
        )
    )
    rows = list(session.scalars(query.order_by(Customer.next_follow_up_at, Customer.id).limit(LIST_LIMIT + 1)))
    truncated = len(rows) > LIST_LIMIT
    rows = rows[:LIST_LIMIT]
    owners = users_by_id(session, {c.owner_id for c in rows})
    items = []
    for c in rows:
        assert c.owner_id is not None and c.next_follow_up_at is not None
        followed = c.last_follow_up_at is not None and c.last_follow_up_at >= c.next_follow_up_at
        items.append(
            FollowUpPlanItem(
                customer_id=c.id,
                customer_name=c.name,
                # Every lead listed has an owner, and a pool's hidden phone shows once someone owns the lead.
                phone=c.phone,
                status=c.status,
                owner_id=c.owner_id,
                owner_name=owners[c.owner_id].name if c.owner_id in owners else None,
                planned_at=c.next_follow_up_at,
                note=c.next_follow_up_note,
                overdue=c.next_follow_up_at < now and not followed,
                last_follow_up_at=c.last_follow_up_at,
            )
        )
    return FollowUpPlanList(
        date=bounds.day.isoformat(), scope=scope, items=items, total=len(items), truncated=truncated
    )
