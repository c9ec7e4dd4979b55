"""HTTP routes for leads: list and follow-ups.

Creating one and reading one are in `assignment.views`: creating may assign it, and a lead the caller
no longer sees answers how it left them, from the ownership history.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from leadpush.deps import Ctx, CurrentUser
from leadpush.leads import service
from leadpush.leads.schemas import CustomerPage, FollowUpCreate, FollowUpOut
from leadpush.schemas import Envelope

router = APIRouter(prefix="/api/customers", tags=["leads"])


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
    with ctx.db.write() as session:
        row = service.add_follow_up(ctx, session, user, customer_id, body.content, body.status)
        out = service.follow_ups_out(session, [row])[0]
    return Envelope(message="跟进已记录", data=out)


@router.get("/{customer_id:int}/follow-ups", response_model=Envelope[list[FollowUpOut]])
def list_follow_ups(customer_id: int, ctx: Ctx, user: CurrentUser) -> Envelope:
    with ctx.db.read() as session:
        out = service.list_follow_ups(session, user, customer_id)
    return Envelope(data=out)
