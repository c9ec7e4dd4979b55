"""Leads: find, list and follow up, always within what the caller may see.

Creating leads is an action (`assignment.actions.create_customers`): one assigned at creation changes owner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import and_, false, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from leadpush.context import AppContext
from leadpush.errors import ApiError, not_found
from leadpush.leads import plans
from leadpush.leads.models import Customer, FollowUp
from leadpush.leads.schemas import CustomerOut, FollowUpOut
from leadpush.permissions import can_see, same_team, visible_filter
from leadpush.pools.access import embargo_until, mask_phone, no_hidden_phone
from leadpush.pools.models import COMPANY_POOL_NAME, Pool
from leadpush.sla.progress import followed_up
from leadpush.transfer.deadlines import refresh_deadlines
from leadpush.users.models import User
from leadpush.users.service import clean_text, is_db_id, users_by_id, users_in_hand


def customers_out(session: Session, customers: Sequence[Customer]) -> list[CustomerOut]:
    """Leads as the API answers them; the phone of a lead in a pool that hides phones is masked for everyone
    (nobody owns it yet): it shows once someone has claimed or been given the lead."""
    return [CustomerOut.model_validate(values) for values in customer_values(session, customers)]


def customer_values(session: Session, customers: Sequence[Customer]) -> list[dict[str, object]]:
    """What `customers_out` validates, lead by lead: for an answer whose model extends `CustomerOut`, validated
    once as that model (not as a CustomerOut first, then copied)."""
    owners = users_in_hand(session, {c.owner_id for c in customers})
    pool_ids = {c.pool_id for c in customers if c.owner_id is None and c.pool_id is not None}
    pools = {p.id: p for p in session.scalars(select(Pool).where(Pool.id.in_(pool_ids)))} if pool_ids else {}
    out = []
    for c in customers:
        pool = pools.get(c.pool_id) if c.owner_id is None and c.pool_id is not None else None
        hidden = pool is not None and pool.hide_phone
        embargo = embargo_until(pool, c)
        values = {k: getattr(c, k) for k in CustomerOut.model_fields if hasattr(c, k)}
        values.update(
            owner_name=owners[c.owner_id].name if c.owner_id in owners else None,
            in_pool=c.owner_id is None,
            pool_name=(pool.name if pool else COMPANY_POOL_NAME) if c.owner_id is None else None,
            phone=mask_phone(c.phone) if hidden else c.phone,
            phone_hidden=hidden,
            embargo_until=embargo,
        )
        out.append(values)
    return out


def get_visible(session: Session, actor: User, customer_id: int, *, lock: bool = False) -> tuple[Customer, User | None]:
    """The lead and its owner, or a 404 if the actor may not see it; `lock` holds the lead's row until commit."""
    if not is_db_id(customer_id):
        raise not_found("customer")
    customer = session.get(Customer, customer_id, with_for_update={"key_share": True} if lock else None)
    if customer is None:
        raise not_found("customer")
    owner = session.get(User, customer.owner_id) if customer.owner_id else None
    if not can_see(session, actor, customer, owner):
        raise not_found("customer")
    return customer, owner


@dataclass
class CustomerFilters:
    owner: str | None = None
    in_pool: bool | None = None
    status: str | None = None
    source: str | None = None
    keyword: str | None = None
    # One pool: a pool's id, or "company" for the company pool; None = every pool the caller may see.
    pool: int | Literal["company"] | None = None


def list_customers(
    session: Session, actor: User, filters: CustomerFilters, page: int, page_size: int
) -> tuple[list[Customer], int]:
    query = select(Customer).where(visible_filter(actor))
    if filters.owner:
        if filters.owner == "me":
            query = query.where(Customer.owner_id == actor.id)
        elif filters.owner.isascii() and filters.owner.isdigit():
            owner_id = int(filters.owner)
            query = query.where(Customer.owner_id == owner_id if is_db_id(owner_id) else false())
        else:
            raise ApiError(422, "invalid_filter", "owner 只能是用户 id 或 me")
    # PostgreSQL refuses NUL in text parameters: control characters can match nothing anyway.
    filters.status, filters.source, filters.keyword = (
        clean_text(filters.status),
        clean_text(filters.source),
        clean_text(filters.keyword),
    )
    if filters.in_pool is not None:
        query = query.where(Customer.owner_id.is_(None) if filters.in_pool else Customer.owner_id.is_not(None))
    if filters.pool == "company":
        query = query.where(Customer.owner_id.is_(None), Customer.pool_id.is_(None))
    elif filters.pool is not None:
        query = query.where(Customer.owner_id.is_(None), Customer.pool_id == filters.pool)
    if filters.status:
        query = query.where(Customer.status == filters.status)
    if filters.source:
        query = query.where(Customer.source == filters.source)
    if filters.keyword:
        like = "%" + filters.keyword.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        # A hidden phone (pooled in a pool that hides phones) is never matched: a search must not reveal it.
        phone_matches = and_(Customer.phone.like(like, escape="\\"), no_hidden_phone())
        query = query.where(or_(Customer.name.like(like, escape="\\"), phone_matches))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Customer.id.desc()).offset((page - 1) * page_size).limit(page_size))
    return list(rows), total


def check_can_follow_up(actor: User, customer: Customer, owner: User | None) -> None:
    if customer.owner_id == actor.id or actor.role == "admin":
        return
    if actor.role == "manager" and owner is not None and same_team(actor, owner):
        return
    raise ApiError(403, "not_owner", "只能跟进自己名下的线索")


@dataclass(frozen=True)
class PlanChange:
    """A follow-up plan given with a follow-up: a time and note, or `at=None` to clear the plan."""

    at: datetime | None
    note: str | None = None


def add_follow_up(
    ctx: AppContext,
    session: Session,
    actor: User,
    customer_id: int,
    content: str,
    status: str | None,
    plan: PlanChange | None = None,
) -> FollowUp:
    """Record a follow-up. With `plan`, the lead's next follow-up plan is set (or cleared) with it; without,
    a plan due today or earlier counts as done and is cleared, a later one stays (see `plans.plan_fulfilled`)."""
    # Locked as read: the owner it is checked against and the deadline computed from stay true until commit.
    customer, owner = get_visible(session, actor, customer_id, lock=True)
    check_can_follow_up(actor, customer, owner)
    now: datetime = ctx.clock.now()
    planned_at = None
    if plan is not None and plan.at is not None:
        plans.check_owned(customer)
        planned_at = plans.plan_time(ctx, plan.at, now)
    values: dict[str, object] = {"last_follow_up_at": now, "updated_at": now}
    if status:
        values["status"] = status
    # The version is raised in SQL, never written from the value read: a write of a stale version + 1
    # would roll it back and let a stale assignment through (and repeat its notification's dedupe key).
    version = session.scalar(
        update(Customer)
        .where(Customer.id == customer.id)
        .values(**values, version=Customer.version + 1)
        .returning(Customer.version)
        .execution_options(synchronize_session=False)
    )
    for key, value in {**values, "version": version}.items():
        set_committed_value(customer, key, value)
    follow_up = FollowUp(customer_id=customer.id, user_id=actor.id, content=content, status=status, created_at=now)
    session.add(follow_up)
    refresh_deadlines(session, [customer], now)
    followed_up(ctx, session, actor, customer, now)
    if plan is not None:
        if planned_at is not None or customer.next_follow_up_at is not None:
            plans.write_plan(ctx, session, customer, planned_at, plan.note, now)
    elif plans.plan_fulfilled(ctx, customer, now):
        plans.write_plan(ctx, session, customer, None, None, now)
    session.flush()
    return follow_up


def set_plan(
    ctx: AppContext, session: Session, actor: User, customer_id: int, at: datetime, note: str | None
) -> Customer:
    """Set the lead's follow-up plan (下次跟进): its owner, their manager or an admin; never on a pooled lead."""
    customer, owner = get_visible(session, actor, customer_id, lock=True)
    check_can_follow_up(actor, customer, owner)
    plans.check_owned(customer)
    now = ctx.clock.now()
    plans.write_plan(ctx, session, customer, plans.plan_time(ctx, at, now), note, now)
    return customer


def clear_plan(ctx: AppContext, session: Session, actor: User, customer_id: int) -> Customer:
    """Clear the lead's follow-up plan (its reminder will not come); clearing none is no error."""
    customer, owner = get_visible(session, actor, customer_id, lock=True)
    check_can_follow_up(actor, customer, owner)
    if customer.next_follow_up_at is not None or customer.follow_up_remind_at is not None:
        plans.write_plan(ctx, session, customer, None, None, ctx.clock.now())
    return customer


def follow_ups_out(session: Session, rows: Sequence[FollowUp]) -> list[FollowUpOut]:
    names = users_by_id(session, {r.user_id for r in rows})
    return [
        FollowUpOut.model_validate(
            {
                "id": r.id,
                "customer_id": r.customer_id,
                "user_id": r.user_id,
                "user_name": names[r.user_id].name if r.user_id in names else None,
                "content": r.content,
                "status": r.status,
                "created_at": r.created_at,
            }
        )
        for r in rows
    ]


def list_follow_ups(session: Session, actor: User, customer_id: int) -> list[FollowUpOut]:
    get_visible(session, actor, customer_id)
    rows = session.scalars(
        select(FollowUp).where(FollowUp.customer_id == customer_id).order_by(FollowUp.id.desc())
    ).all()
    return follow_ups_out(session, rows)
