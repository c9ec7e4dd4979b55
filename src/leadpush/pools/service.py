"""Pools: their rules as they apply, where a returned lead goes, creating and editing pools and members.

A pool's rule column left empty (None) takes the deployment's setting; the company pool (`pool_id` NULL)
has only the deployment's settings (LEADPUSH_CLAIM_DAILY_LIMIT, LEADPUSH_RECLAIM_COOLDOWN_HOURS) and no
embargo or hidden phone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from leadpush.config import Settings
from leadpush.db import rows_changed
from leadpush.errors import ApiError
from leadpush.leads.models import Customer
from leadpush.pools.access import embargo_until, may_manage, may_use, usable_pool_ids
from leadpush.pools.cooldown import lost_since
from leadpush.pools.models import COMPANY_POOL_NAME, Pool, PoolClaim, PoolMember
from leadpush.teams.service import clean_team_name, require_team
from leadpush.users.models import User

MAX_ID = 2**31 - 1


@dataclass(frozen=True)
class PoolRules:
    """A pool's rules as they apply now (deployment settings filled in)."""

    claim_daily_limit: int  # 0 = no limit
    cooldown_hours: float  # 0 = none
    embargo_minutes: int
    hide_phone: bool


def rules_of(settings: Settings, pool: Pool | None) -> PoolRules:
    if pool is None:
        return PoolRules(settings.claim_daily_limit, settings.reclaim_cooldown_hours, 0, False)
    return PoolRules(
        claim_daily_limit=settings.claim_daily_limit if pool.claim_daily_limit is None else pool.claim_daily_limit,
        cooldown_hours=settings.reclaim_cooldown_hours if pool.cooldown_hours is None else pool.cooldown_hours,
        embargo_minutes=pool.embargo_minutes or 0,
        hide_phone=bool(pool.hide_phone),
    )


def pool_name(pool: Pool | None) -> str:
    return pool.name if pool is not None else COMPANY_POOL_NAME


def start_of_day(now: datetime, settings: Settings) -> datetime:
    """Midnight of `now`'s day in LEADPUSH_TIMEZONE: daily limits reset there."""
    local = now.astimezone(settings.tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def claims_today(session: Session, settings: Settings, user_id: int, pool_id: int | None, now: datetime) -> int:
    """How many leads `user_id` claimed from this pool (None = the company pool) since local midnight."""
    return (
        session.scalar(
            select(func.count())
            .select_from(PoolClaim)
            .where(
                PoolClaim.user_id == user_id,
                PoolClaim.pool_id.is_(None) if pool_id is None else PoolClaim.pool_id == pool_id,
                PoolClaim.created_at >= start_of_day(now, settings),
            )
        )
        or 0
    )


def record_claim(session: Session, pool_id: int | None, user_id: int, customer_id: int, now: datetime) -> None:
    session.add(PoolClaim(pool_id=pool_id, user_id=user_id, customer_id=customer_id, created_at=now))


def cooldown_until(
    session: Session,
    settings: Settings,
    customers: Sequence[Customer],
    pools: dict[int, Pool],
    user_id: int,
    now: datetime,
    lost: dict[int, dict[int, datetime]] | None = None,
) -> dict[int, tuple[datetime, datetime]]:
    """For the pooled leads `user_id` lost within their pool's cooldown: (when they lost it, when it ends).

    `lost`: when `user_id` last lost each of these leads, already read by the caller (for every lead given, as
    `lost_since` answers, any time back: the cooldown is applied here); None = read it here."""
    hours: dict[int, float] = {}
    for c in customers:
        h = rules_of(settings, pools.get(c.pool_id) if c.pool_id else None).cooldown_hours
        if h > 0:
            hours[c.id] = h
    if not hours:
        return {}
    if lost is None:
        lost = lost_since(session, hours, now - timedelta(hours=max(hours.values())))
    found: dict[int, tuple[datetime, datetime]] = {}
    for cid, h in hours.items():
        when = lost.get(cid, {}).get(user_id)
        if when is not None and now < when + timedelta(hours=h):
            found[cid] = (when, when + timedelta(hours=h))
    return found


ClaimBlock = Literal["embargo", "claim_limit", "cooldown"]


def claim_blocks(
    session: Session, settings: Settings, actor: User, customers: Sequence[Customer], now: datetime
) -> dict[int, ClaimBlock | None]:
    """For each pooled lead, why `actor` may not claim it right now (None = they may), as a claim would say."""
    pooled = [c for c in customers if c.owner_id is None]
    pools = pools_by_id(session, {c.pool_id for c in pooled})
    cooling = cooldown_until(session, settings, pooled, pools, actor.id, now)
    claimed: dict[int | None, int] = {}
    found: dict[int, ClaimBlock | None] = {}
    for c in pooled:
        pool = pools.get(c.pool_id) if c.pool_id else None
        limit = rules_of(settings, pool).claim_daily_limit
        embargo = embargo_until(pool, c)
        if limit > 0 and c.pool_id not in claimed:
            claimed[c.pool_id] = claims_today(session, settings, actor.id, c.pool_id, now)
        if embargo is not None and now < embargo:
            found[c.id] = "embargo"
        elif limit > 0 and claimed[c.pool_id] >= limit:
            found[c.id] = "claim_limit"
        elif c.id in cooling:
            found[c.id] = "cooldown"
        else:
            found[c.id] = None
    return found


def pools_by_id(session: Session, ids: Iterable[int | None]) -> dict[int, Pool]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return {p.id: p for p in session.scalars(select(Pool).where(Pool.id.in_(wanted)))}


def pool_for_owner(session: Session, owner: User | None) -> int | None:
    """Where a lead goes back to when `owner` lets it go: their team's pool (the first by id) if the team has
    one, else the company pool (None)."""
    if owner is None or owner.team is None:
        return None
    return session.scalar(select(Pool.id).where(Pool.team == owner.team).order_by(Pool.id).limit(1))


# ---------------------------------------------------------------------------------------------------------
# Managing pools.


def pool_not_found() -> ApiError:
    return ApiError(404, "pool_not_found", "线索池不存在")


def get_pool(session: Session, pool_id: int) -> Pool:
    pool = session.get(Pool, pool_id) if 0 < pool_id <= MAX_ID else None
    if pool is None:
        raise pool_not_found()
    return pool


def usable_pool(session: Session, actor: User, pool_id: int) -> Pool:
    """The pool, or 404 for one that does not exist or that `actor` may not see (no telling them apart)."""
    pool = get_pool(session, pool_id)
    if not may_use(session, actor, pool):
        raise pool_not_found()
    return pool


def managed_pool(session: Session, actor: User, pool_id: int) -> Pool:
    pool = usable_pool(session, actor, pool_id)
    if not may_manage(actor, pool):
        raise ApiError(403, "forbidden", "只有系统管理员和该团队的经理可以管理此线索池")
    return pool


def list_pools(session: Session, actor: User) -> list[Pool]:
    query = select(Pool).order_by(Pool.id)
    usable = usable_pool_ids(actor)
    if usable is not None:
        query = query.where(Pool.id.in_(usable))
    return list(session.scalars(query))


def check_team_for(session: Session, actor: User, team: str | None) -> str | None:
    """The team a pool may be given by `actor` (cleaned), or 403/422."""
    if team is not None:
        team = clean_team_name(team)
    if actor.role == "admin":
        require_team(session, team)
        return team
    if actor.role != "manager" or actor.team is None:
        raise ApiError(403, "forbidden", "只有系统管理员和团队经理可以管理线索池")
    if team != actor.team:
        raise ApiError(403, "forbidden", "经理只能管理本团队的线索池")
    return team


def check_name_free(session: Session, name: str, pool_id: int | None = None) -> None:
    found = session.scalar(select(Pool.id).where(Pool.name == name))
    if found is not None and found != pool_id:
        raise ApiError(409, "pool_name_taken", f"已有名为「{name}」的线索池")


def flush_or_name_taken(session: Session, name: str) -> None:
    """Flush; a name taken meanwhile by a concurrent request is the same 409 as one taken before."""
    try:
        session.flush()
    except IntegrityError as exc:
        raise ApiError(409, "pool_name_taken", f"已有名为「{name}」的线索池") from exc


def create_pool(session: Session, actor: User, values: dict[str, Any]) -> Pool:
    values["team"] = check_team_for(session, actor, values.get("team"))
    check_name_free(session, values["name"])
    pool = Pool(**values)
    session.add(pool)
    flush_or_name_taken(session, values["name"])
    return pool


def update_pool(session: Session, actor: User, pool_id: int, values: dict[str, Any]) -> Pool:
    pool = managed_pool(session, actor, pool_id)
    if "team" in values and values["team"] != pool.team:
        values["team"] = check_team_for(session, actor, values["team"])
    if "name" in values:
        check_name_free(session, values["name"], pool.id)
    for key, value in values.items():
        setattr(pool, key, value)
    flush_or_name_taken(session, pool.name)
    return pool


def delete_pool(session: Session, actor: User, pool_id: int) -> tuple[Pool, int]:
    """Delete a pool; its leads go to the company pool (the FK's ON DELETE SET NULL). Answers how many."""
    pool = managed_pool(session, actor, pool_id)
    moved = session.scalar(select(func.count()).select_from(Customer).where(Customer.pool_id == pool.id)) or 0
    session.delete(pool)
    session.flush()
    return pool, moved


def set_member(session: Session, actor: User, pool_id: int, user_id: int, role: str) -> Pool:
    pool = managed_pool(session, actor, pool_id)
    user = session.get(User, user_id) if 0 < user_id <= MAX_ID else None
    if user is None:
        raise ApiError(404, "user_not_found", "用户不存在")
    row = session.scalar(select(PoolMember).where(PoolMember.pool_id == pool.id, PoolMember.user_id == user.id))
    if row is None:
        session.add(PoolMember(pool_id=pool.id, user_id=user.id, role=role))
    else:
        row.role = role
    session.flush()
    return pool


def remove_member(session: Session, actor: User, pool_id: int, user_id: int) -> Pool:
    pool = managed_pool(session, actor, pool_id)
    gone = rows_changed(
        session.execute(delete(PoolMember).where(PoolMember.pool_id == pool.id, PoolMember.user_id == user_id))
    )
    if not gone:
        raise ApiError(404, "member_not_found", "该用户不是此线索池的成员")
    return pool


def members_of(session: Session, pool_ids: Iterable[int]) -> dict[int, list[tuple[PoolMember, User]]]:
    ids = list(pool_ids)
    found: dict[int, list[tuple[PoolMember, User]]] = {i: [] for i in ids}
    if not ids:
        return found
    rows = session.execute(
        select(PoolMember, User)
        .join(User, User.id == PoolMember.user_id)
        .where(PoolMember.pool_id.in_(ids))
        .order_by(PoolMember.pool_id, User.id)
    )
    for member, user in rows:
        found[member.pool_id].append((member, user))
    return found


def pool_users(session: Session, pool: Pool) -> list[User]:
    """The active people who may use the pool (its team and its members): whom its leads may go to."""
    members = select(PoolMember.user_id).where(PoolMember.pool_id == pool.id)
    who = User.id.in_(members) if pool.team is None else or_(User.team == pool.team, User.id.in_(members))
    return list(session.scalars(select(User).where(User.active.is_(True), who).order_by(User.id)))


def lead_counts(session: Session, pool_ids: Iterable[int | None]) -> dict[int | None, int]:
    ids = list(pool_ids)
    rows = session.execute(
        select(Customer.pool_id, func.count()).where(Customer.owner_id.is_(None)).group_by(Customer.pool_id)
    )
    counts: dict[int | None, int] = {pool_id: n for pool_id, n in rows}
    return {i: counts.get(i, 0) for i in ids}
