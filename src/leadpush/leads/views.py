"""HTTP routes for leads: list and follow-ups.

Creating one and reading one are in `assignment.views`: creating may assign it, and a lead the caller
no longer sees answers how it left them, from the ownership history.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from leadpush.deps import Ctx, CurrentUser
from leadpush.leads import plans, service
from leadpush.leads.schemas import (
    CustomerOut,
    CustomerPage,
    FollowUpCreate,
    FollowUpOut,
    FollowUpPlanIn,
    FollowUpPlanList,
)
from leadpush.schemas import Envelope

router = APIRouter(prefix="/api/customers", tags=["leads"])
# Today's follow-ups (今日跟进): the plans of a day, across leads.
plans_router = APIRouter(prefix="/api/follow-up-plans", tags=["leads"])


def _list(
    ctx: Ctx,
    user: CurrentUser,
    filters: service.CustomerFilters,
    page: int,
    page_size: int,
) -> Envelope:
    with ctx.db.read() as session:
        rows, total = service.list_customers(session, user, filters, page, page_size)
        out = service.customers_out(session, rows)
    return Envelope(data=CustomerPage(items=out, total=total, page=page, page_size=page_size))


Page = Annotated[int, Query(ge=1, le=100_000)]
PageSize = Annotated[int, Query(alias="pageSize", ge=1, le=200)]


@router.get("", response_model=Envelope[CustomerPage])
def list_customers(
    ctx: Ctx,
    user: CurrentUser,
    owner: Annotated[str | None, Query(description="用户 id 或 me", max_length=20)] = None,
    in_pool: Annotated[bool | None, Query(alias="inPool")] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
    source: Annotated[str | None, Query(max_length=100)] = None,
    keyword: Annotated[str | None, Query(max_length=100)] = None,
    page: Page = 1,
    page_size: PageSize = 20,
) -> Envelope:
    """Leads the caller may see, newest first, with filters and pagination."""
    filters = service.CustomerFilters(owner, in_pool, status, source, keyword)
    return _list(ctx, user, filters, page, page_size)


@router.post("/{customer_id:int}/follow-ups", response_model=Envelope[FollowUpOut], status_code=201)
def add_follow_up(customer_id: int, body: FollowUpCreate, ctx: Ctx, user: CurrentUser) -> Envelope:
    """Record a follow-up; it resets the lead's automatic-transfer deadline."""
    plan = None
    if "next_follow_up_at" in body.model_fields_set:
        plan = service.PlanChange(body.next_follow_up_at, body.next_follow_up_note)
    with ctx.db.write() as session:
        row = service.add_follow_up(ctx, session, user, customer_id, body.content, body.status, plan)
        out = service.follow_ups_out(session, [row])[0]
    return Envelope(message="跟进已记录", data=out)


@router.put("/{customer_id:int}/follow-up-plan", response_model=Envelope[CustomerOut])
def set_follow_up_plan(customer_id: int, body: FollowUpPlanIn, ctx: Ctx, user: CurrentUser) -> Envelope:
    """Set the lead's next follow-up (下次跟进): its owner is reminded at that time on their channels."""
    with ctx.db.write() as session:
        customer = service.set_plan(ctx, session, user, customer_id, body.at, body.note)
        out = service.customers_out(session, [customer])[0]
    return Envelope(message="下次跟进已设置", data=out)


@router.delete("/{customer_id:int}/follow-up-plan", response_model=Envelope[CustomerOut])
def clear_follow_up_plan(customer_id: int, ctx: Ctx, user: CurrentUser) -> Envelope:
    """Clear the lead's next follow-up plan (no reminder will come)."""
    with ctx.db.write() as session:
        customer = service.clear_plan(ctx, session, user, customer_id)
        out = service.customers_out(session, [customer])[0]
    return Envelope(message="下次跟进已清除", data=out)


@router.get("/{customer_id:int}/follow-ups", response_model=Envelope[list[FollowUpOut]])
def list_follow_ups(customer_id: int, ctx: Ctx, user: CurrentUser) -> Envelope:
    with ctx.db.read() as session:
        out = service.list_follow_ups(session, user, customer_id)
    return Envelope(data=out)


@plans_router.get("", response_model=Envelope[FollowUpPlanList])
def list_follow_up_plans(
    ctx: Ctx,
    user: CurrentUser,
    day: Annotated[date | None, Query(alias="date", description="日期 YYYY-MM-DD（系统时区），默认今天")] = None,
    scope: Annotated[plans.Scope, Query(description="mine = 我的；team = 团队（经理、管理员）")] = "mine",
) -> Envelope:
    """The leads planned for a day plus the overdue ones (planned earlier, not followed up since), by time."""
    with ctx.db.read() as session:
        out = plans.list_day(ctx, session, user, day, scope)
    return Envelope(data=out)
