"""Who may use which pool: see and claim its leads, hand them out, manage the pool.

- The company pool (`pool_id` NULL) is everyone's, as it always was: everyone sees and claims, managers
  hand out within their team, admins anywhere (leadpush.permissions).
- A pool row is used (seen, claimed from) by its members, by the members of its team when it has one, and
  by admins. It is handed out by its pool admins, its team's managers and admins; managed (rules,
  members, deletion) by its team's managers and admins.
- A pool with `hide_phone` masks the phone of its leads, for everyone, while they sit in it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, or_, select, true
from sqlalchemy.orm import Session

from leadpush.leads.models import Customer
from leadpush.pools.models import Pool, PoolMember
from leadpush.users.models import User


def usable_pool_ids(actor: User) -> Select[Any] | None:
    """SQL for the ids of the pools `actor` may see and claim from; None = every pool (admins)."""
    if actor.role == "admin":
        return None
    member_of = select(PoolMember.pool_id).where(PoolMember.user_id == actor.id)
    if actor.team is None:
        return member_of
    return select(Pool.id).where(or_(Pool.team == actor.team, Pool.id.in_(member_of)))


def pooled_lead_filter(actor: User) -> ColumnElement[bool]:
    """SQL condition on a pooled lead's pool: whether `actor` may see it (the company pool's: everyone)."""
    usable = usable_pool_ids(actor)
    if usable is None:
        return true()
    return or_(Customer.pool_id.is_(None), Customer.pool_id.in_(usable))


def pool_role(session: Session, actor: User, pool: Pool) -> str | None:
    """`actor`'s role in the pool's member list ("member" | "admin"), None if not listed."""
    return session.scalar(select(PoolMember.role).where(PoolMember.pool_id == pool.id, PoolMember.user_id == actor.id))


def may_use(session: Session, actor: User, pool: Pool | None) -> bool:
    """Whether `actor` may see and claim the leads of `pool` (None = the company pool)."""
    if pool is None or actor.role == "admin":
        return True
    if pool.team is not None and actor.team == pool.team:
        return True
    return pool_role(session, actor, pool) is not None


def may_manage(actor: User, pool: Pool) -> bool:
    """Rules, members and deletion: admins, and managers of the pool's team."""
    if actor.role == "admin":
        return True
    return actor.role == "manager" and actor.team is not None and pool.team == actor.team


def may_hand_out(session: Session, actor: User, pool: Pool) -> bool:
    """Assign the pool's leads to people: admins, the team's managers, the pool's admins."""
    return may_manage(actor, pool) or pool_role(session, actor, pool) == "admin"


def no_hidden_phone() -> ColumnElement[bool]:
    """SQL condition: the lead's phone is not hidden (it has an owner, or its pool does not hide phones)."""
    hiding = exists().where(Pool.id == Customer.pool_id, Pool.hide_phone.is_(True))
    return or_(Customer.owner_id.is_not(None), Customer.pool_id.is_(None), ~hiding)


def embargo_until(pool: Pool | None, customer: Customer) -> datetime | None:
    """Until when members may not claim the lead (None = no embargo, or it is not in a pool)."""
    if pool is None or not pool.embargo_minutes or customer.owner_id is not None or customer.pooled_at is None:
        return None
    return customer.pooled_at + timedelta(minutes=pool.embargo_minutes)


def mask_phone(phone: str) -> str:
    """138****8000: the first three and last four digits, the rest starred (shorter numbers: less shown)."""
    if len(phone) >= 8:
        return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]
    if len(phone) >= 4:
        return phone[:1] + "*" * (len(phone) - 2) + phone[-1:]
    return "*" * len(phone)
