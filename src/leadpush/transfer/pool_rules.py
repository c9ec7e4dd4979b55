"""Public-pool rules: a daily claim limit per salesperson and a cooldown before reclaiming a lead."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from leadpush.assignment.models import Assignment
from leadpush.config import Settings
from leadpush.errors import ApiError
from leadpush.users.models import User


def start_of_day(now: datetime, settings: Settings) -> datetime:
    local = now.astimezone(settings.tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def check_claim_allowed(session: Session, settings: Settings, actor: User, customer_id: int, now: datetime) -> None:
    """Raise a 409 with the reason when `actor` may not claim this lead from the pool right now.

    With a daily limit, the caller holds the actor's row lock (`lock_users`) in the transaction that then
    claims, so the count cannot be passed by several concurrent claims at once.
    """
    if settings.claim_daily_limit > 0:
        claimed_today = (
            session.scalar(
                select(func.count())
                .select_from(Assignment)
                .where(
                    Assignment.to_user_id == actor.id,
                    Assignment.via == "claim",
                    Assignment.created_at >= start_of_day(now, settings),
                )
            )
            or 0
        )
        if claimed_today >= settings.claim_daily_limit:
            raise ApiError(
                409,
                "claim_limit_reached",
                f"今天已领取 {claimed_today} 条线索，达到每日上限 {settings.claim_daily_limit} 条",
            )
    if settings.reclaim_cooldown_hours > 0:
        last_lost = session.scalar(
            select(func.max(Assignment.created_at)).where(
                Assignment.customer_id == customer_id,
                Assignment.from_user_id == actor.id,
            )
        )
        if last_lost is not None:
            free_at = last_lost + timedelta(hours=settings.reclaim_cooldown_hours)
            if now < free_at:
                raise ApiError(
                    409,
                    "reclaim_cooldown",
                    f"该线索刚从您名下移出，{free_at.astimezone(settings.tz):%m-%d %H:%M} 后才能再次领取",
                )
