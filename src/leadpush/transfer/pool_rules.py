"""Pool rules on claims and hand-outs: the embargo on newly pooled leads, the daily claim limit per pool, and
the previous-owner cooldown (the pool's, else LEADPUSH_RECLAIM_COOLDOWN_HOURS for the company pool)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from leadpush.config import Settings
from leadpush.errors import ApiError
from leadpush.leads.models import Customer
from leadpush.pools.access import embargo_until
from leadpush.pools.models import Pool
from leadpush.pools.service import claims_today, cooldown_until, pool_name, rules_of, start_of_day
from leadpush.users.models import User

__all__ = ["check_claim_allowed", "hand_out_cooldowns", "start_of_day"]


def _minutes_left(now: datetime, until: datetime) -> int:
    return max(1, int((until - now).total_seconds() + 59) // 60)


def check_claim_allowed(
    session: Session, settings: Settings, actor: User, customer: Customer, pool: Pool | None, now: datetime
) -> None:
    """Raise a 409 with the reason when `actor` may not claim this pooled lead right now.

    With a daily limit, the caller holds the actor's row lock (`lock_users`) in the transaction that then
    claims, so the count cannot be passed by several concurrent claims at once.
    """
    rules = rules_of(settings, pool)
    free_at = embargo_until(pool, customer)
    if free_at is not None and now < free_at:
        raise ApiError(
            409,
            "pool_embargo",
            f"该线索刚进入线索池「{pool_name(pool)}」，{_minutes_left(now, free_at)} 分钟后才能领取",
            {"embargoUntil": free_at.isoformat()},
        )
    if rules.claim_daily_limit > 0:
        claimed = claims_today(session, settings, actor.id, pool.id if pool else None, now)
        if claimed >= rules.claim_daily_limit:
            raise ApiError(
                409,
                "claim_limit_reached",
                f"今天已从「{pool_name(pool)}」领取 {claimed} 条线索，达到每日上限 {rules.claim_daily_limit} 条",
            )
    blocked = cooldown_until(session, settings, [customer], {pool.id: pool} if pool else {}, actor.id, now)
    if customer.id in blocked:
        ends = blocked[customer.id][1]
        raise ApiError(
            409,
            "reclaim_cooldown",
            f"该线索刚从您名下移出，{ends.astimezone(settings.tz):%m-%d %H:%M} 后才能再次领取",
            {"cooldownUntil": ends.isoformat()},
        )


def hand_out_cooldowns(
    session: Session,
    settings: Settings,
    customers: Sequence[Customer],
    pools: dict[int, Pool],
    target: User,
    now: datetime,
    lost: dict[int, dict[int, datetime]] | None = None,
) -> dict[int, str]:
    """The pooled leads that may not be given to `target` yet (they lost them within the pool's cooldown),
    each with the Chinese reason (code `previous_owner_cooldown`). `lost`: see `cooldown_until`."""
    pooled = [c for c in customers if c.owner_id is None]
    blocked = cooldown_until(session, settings, pooled, pools, target.id, now, lost)
    return {
        cid: (
            f"{target.name} 于 {lost.astimezone(settings.tz):%m-%d %H:%M} 刚失去该线索，冷却期内不能再分配给 TA，"
            f"{ends.astimezone(settings.tz):%m-%d %H:%M} 后可以分配"
        )
        for cid, (lost, ends) in blocked.items()
    }
