"""HTTP routes for pools: list them with today's rules for the caller; admins and the team's managers
create, edit and delete them and set their members and pool admins."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from leadpush.config import Settings
from leadpush.deps import Ctx, CurrentUser
from leadpush.errors import ApiError
from leadpush.leads import service as leads_service
from leadpush.pools import service
from leadpush.pools.access import may_hand_out, may_manage, may_use, pool_role
from leadpush.pools.models import COMPANY_POOL_NAME, Pool
from leadpush.pools.schemas import (
    MemberBody,
    PoolBody,
    PoolDeleted,
    PoolLeadOut,
    PoolLeadPage,
    PoolMemberOut,
    PoolOut,
    PoolPatch,
    PoolUserOut,
)
from leadpush.schemas import Envelope
from leadpush.users.models import User

router = APIRouter(prefix="/api/pools", tags=["pools"])
# The pool listing keeps the address it always had, among the lead routes.
pool_leads = APIRouter(prefix="/api/customers", tags=["leads"])


def pools_out(session: Session, settings: Settings, actor: User, pools: list[Pool | None], now) -> list[PoolOut]:  # noqa: ANN001
    counts = service.lead_counts(session, [p.id if p else None for p in pools])
    members = service.members_of(session, [p.id for p in pools if p is not None])
    out = []
    for pool in pools:
        pid = pool.id if pool else None
        rules = service.rules_of(settings, pool)
        claimed = service.claims_today(session, settings, actor.id, pid, now)
        role = pool_role(session, actor, pool) if pool else None
        manage = pool is not None and may_manage(actor, pool)
        out.append(
            PoolOut(
                id=pid,
                name=service.pool_name(pool),
                company=pool is None,
                team=pool.team if pool else None,
                claim_daily_limit=pool.claim_daily_limit if pool else settings.claim_daily_limit,
                cooldown_hours=pool.cooldown_hours if pool else settings.reclaim_cooldown_hours,
                embargo_minutes=rules.embargo_minutes,
                hide_phone=rules.hide_phone,
                effective_claim_daily_limit=rules.claim_daily_limit,
                effective_cooldown_hours=rules.cooldown_hours,
                claimed_today=claimed,
                claims_left_today=max(0, rules.claim_daily_limit - claimed) if rules.claim_daily_limit else None,
                lead_count=counts.get(pid, 0),
                my_role=role,  # type: ignore[arg-type]  # one of MEMBER_ROLES, checked when written
                can_claim=may_use(session, actor, pool),
                can_hand_out=actor.role != "sales" if pool is None else may_hand_out(session, actor, pool),
                can_manage=manage,
                members=[
                    PoolMemberOut(user_id=u.id, name=u.name, team=u.team, role=m.role)  # type: ignore[arg-type]
                    for m, u in members.get(pool.id, [])
                ]
                if pool is not None
                else [],
                created_at=pool.created_at if pool else None,
            )
        )
    return out


def one_out(ctx: Ctx, session: Session, actor: User, pool: Pool) -> PoolOut:
    return pools_out(session, ctx.settings, actor, [pool], ctx.clock.now())[0]


@router.get("", response_model=Envelope[list[PoolOut]])
def list_pools(ctx: Ctx, user: CurrentUser) -> Envelope:
    """The pools the caller may see, the company pool (id null) first, each with its rules as they apply
    today: the claim limit and how many claims the caller has left today, the cooldown, the embargo."""
    with ctx.db.read() as session:
        pools: list[Pool | None] = [None, *service.list_pools(session, user)]
        out = pools_out(session, ctx.settings, user, pools, ctx.clock.now())
    return Envelope(data=out)


@router.get("/{pool_id:int}", response_model=Envelope[PoolOut])
def get_pool(pool_id: int, ctx: Ctx, user: CurrentUser) -> Envelope:
    with ctx.db.read() as session:
        out = one_out(ctx, session, user, service.usable_pool(session, user, pool_id))
    return Envelope(data=out)


@router.get("/{pool_id:int}/assignees", response_model=Envelope[list[PoolUserOut]])
def assignees(pool_id: int, ctx: Ctx, user: CurrentUser) -> Envelope:
    """Whom the pool's leads may be handed out to (active users of the pool), for those who hand them out."""
    with ctx.db.read() as session:
        pool = service.usable_pool(session, user, pool_id)
        if not may_hand_out(session, user, pool):
            raise ApiError(403, "forbidden", "只有线索池管理员、团队经理和系统管理员可以分配该线索池的线索")
        out = [PoolUserOut.model_validate(u) for u in service.pool_users(session, pool)]
    return Envelope(data=out)


@router.post("", response_model=Envelope[PoolOut], status_code=201)
def create_pool(body: PoolBody, ctx: Ctx, user: CurrentUser) -> Envelope:
    """Create a pool (admins any; managers one of their own team)."""
    with ctx.db.write() as session:
        pool = service.create_pool(session, user, body.model_dump())
        out = one_out(ctx, session, user, pool)
    return Envelope(message=f"线索池「{out.name}」已创建", data=out)


@router.patch("/{pool_id:int}", response_model=Envelope[PoolOut])
def update_pool(pool_id: int, body: PoolPatch, ctx: Ctx, user: CurrentUser) -> Envelope:
    values = body.model_dump(include=body.model_fields_set)
    for key in ("name", "embargo_minutes", "hide_phone"):
        if key in values and values[key] is None:
            del values[key]  # not nullable: null leaves them as they are
    with ctx.db.write() as session:
        pool = service.update_pool(session, user, pool_id, values)
        out = one_out(ctx, session, user, pool)
    return Envelope(message="线索池已保存", data=out)


@router.delete("/{pool_id:int}", response_model=Envelope[PoolDeleted])
def delete_pool(pool_id: int, ctx: Ctx, user: CurrentUser) -> Envelope:
    """Delete a pool: its leads move to the company pool (公司公海), its members and claim counts go."""
    with ctx.db.write() as session:
        pool, moved = service.delete_pool(session, user, pool_id)
        out = PoolDeleted(id=pool.id, name=pool.name, moved_to_company_pool=moved)
    return Envelope(message=f"线索池「{out.name}」已删除，{moved} 条线索已移入{COMPANY_POOL_NAME}", data=out)


@router.post("/{pool_id:int}/members", response_model=Envelope[PoolOut])
def set_member(pool_id: int, body: MemberBody, ctx: Ctx, user: CurrentUser) -> Envelope:
    """Add a member or a pool admin (role "admin": may hand the pool's leads out), or change their role."""
    with ctx.db.write() as session:
        pool = service.set_member(session, user, pool_id, body.user_id, body.role)
        out = one_out(ctx, session, user, pool)
    return Envelope(message="成员已保存", data=out)


@router.delete("/{pool_id:int}/members/{user_id:int}", response_model=Envelope[PoolOut])
def remove_member(pool_id: int, user_id: int, ctx: Ctx, user: CurrentUser) -> Envelope:
    with ctx.db.write() as session:
        pool = service.remove_member(session, user, pool_id, user_id)
        out = one_out(ctx, session, user, pool)
    return Envelope(message="成员已移除", data=out)


Page = Annotated[int, Query(ge=1, le=100_000)]
PageSize = Annotated[int, Query(alias="pageSize", ge=1, le=200)]


@pool_leads.get("/public-pool", response_model=Envelope[PoolLeadPage])
def public_pool(
    ctx: Ctx,
    user: CurrentUser,
    pool_id: Annotated[
        str | None,
        Query(
            alias="poolId",
            pattern=r"^(company|[1-9][0-9]{0,9})$",
            description="一个线索池的 id，或 company = 公司公海；不传 = 调用者可见的全部线索池",
        ),
    ] = None,
    keyword: Annotated[str | None, Query(max_length=100)] = None,
    source: Annotated[str | None, Query(max_length=100)] = None,
    page: Page = 1,
    page_size: PageSize = 20,
) -> Envelope:
    """Leads nobody owns, in the pools the caller may see (or one of them): each with its pool, the end of its
    embargo, whether the caller may claim it now and if not why (`claimBlock`). Hidden phones are masked."""
    pool: int | Literal["company"] | None = "company" if pool_id == "company" else None
    with ctx.db.read() as session:
        if pool_id is not None and pool_id != "company":
            pool = service.usable_pool(session, user, int(pool_id)).id
        filters = leads_service.CustomerFilters(in_pool=True, keyword=keyword, source=source, pool=pool)
        rows, total = leads_service.list_customers(session, user, filters, page, page_size)
        out = leads_service.customers_out(session, rows)
        now = ctx.clock.now()
        blocks = service.claim_blocks(session, ctx.settings, user, rows, now)
    items = []
    for lead in out:
        block = blocks.get(lead.id)
        embargo = lead.embargo_until
        items.append(
            PoolLeadOut(
                **lead.model_dump(),
                claim_block=block,
                can_claim=lead.id in blocks and block is None,
                embargo_minutes_left=math.ceil((embargo - now).total_seconds() / 60)
                if embargo is not None and embargo > now
                else None,
            )
        )
    return Envelope(data=PoolLeadPage(items=items, total=total, page=page, page_size=page_size))
