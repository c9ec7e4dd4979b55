"""HTTP routes for every ownership change: creating leads, the four assignment endpoints, claim, release;
and reading one lead, which for a former owner answers how it left them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import Session

from leadpush.assignment import actions, service
from leadpush.assignment.schemas import (
    AssignBody,
    AssignedCustomer,
    AssignmentOut,
    BatchAssignBody,
    BatchResult,
    ItemFailureOut,
    ReleaseBody,
)
from leadpush.assignment.service import ChangeResult
from leadpush.context import AppContext
from leadpush.deps import Ctx, CurrentUser
from leadpush.errors import ApiError, forbidden
from leadpush.leads.models import Customer
from leadpush.leads.schemas import CustomerCreate, CustomerList, CustomerOut, ImportResult
from leadpush.leads.service import customer_values, customers_out, get_visible
from leadpush.leads.sheets import XLSX_TYPE, read_sheet
from leadpush.schemas import Envelope
from leadpush.sla.progress import first_follow_up_of, open_leads
from leadpush.users.models import User
from leadpush.wechat.legacy import notification_data

router = APIRouter(prefix="/api/customers", tags=["assignment"])
# Creating leads is an action here (one may be assigned at creation), documented with the other lead routes.
creation = APIRouter(prefix="/api/customers", tags=["leads"])


@creation.post("", response_model=Envelope[CustomerOut] | Envelope[CustomerList], status_code=201)
def create_customers(body: CustomerCreate | list[CustomerCreate], ctx: Ctx, user: CurrentUser) -> Envelope:
    """Create one lead, or a list of up to 1,000; in the public pool unless `assignedTo` is given."""
    items = body if isinstance(body, list) else [body]
    with ctx.db.write() as session:
        customers = actions.create_customers(ctx, session, user, items)
        out = customers_out(session, customers)
    if isinstance(body, list):
        return Envelope(message=f"已创建 {len(out)} 条线索", data=CustomerList(customers=out))
    return Envelope(message="线索已创建", data=out[0])


SHEET_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "文件本身作为请求体（不是 multipart）：CSV（UTF-8 或 GBK）、粘贴的单元格（制表符分隔）或 .xlsx",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "text/tab-separated-values": {"schema": {"type": "string"}},
            XLSX_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@creation.post("/import", response_model=Envelope[ImportResult], openapi_extra=SHEET_BODY)
async def import_customers(
    request: Request,
    ctx: Ctx,
    user: CurrentUser,
    dry_run: Annotated[
        bool, Query(alias="dryRun", description="true（默认）只检查并预览；false 创建所有无错误的行")
    ] = True,
) -> Envelope:
    """Import leads from a spreadsheet (admins and managers): a header row, then one lead per row.

    Every row is answered with its row number as the sheet shows it, its cleaned values, its errors and
    warnings. With `dryRun=false` the valid rows are created in one transaction (assigned ones notified,
    one digest per person) and the rows with errors are skipped.
    """
    if user.role not in ("admin", "manager"):  # refused before the body is read
        raise forbidden("只有管理员和经理可以批量导入线索")
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    return await run_in_threadpool(_import, ctx, user, body, content_type, dry_run)


def _import(ctx: AppContext, user: User, body: bytes, content_type: str, dry_run: bool) -> Envelope:
    sheet = read_sheet(body, content_type, ctx.settings.max_batch)
    if dry_run:
        with ctx.db.read() as session:
            result = actions.import_customers(ctx, session, user, sheet, dry_run=True)
        return Envelope(message=f"可导入 {result.valid} 条，有错误 {result.invalid} 条", data=result)
    with ctx.db.write() as session:
        result = actions.import_customers(ctx, session, user, sheet, dry_run=False)
    skipped = f"，跳过 {len(result.skipped)} 行有错误的数据" if result.skipped else ""
    return Envelope(message=f"已导入 {len(result.created)} 条线索{skipped}", data=result)


@creation.get("/{customer_id:int}", response_model=Envelope[CustomerOut])
def get_customer(customer_id: int, ctx: Ctx, user: CurrentUser) -> Envelope:
    """One lead the caller may see.

    404 `customer_not_found` for a lead they cannot see; but to someone who once owned it and lost it,
    404 `customer_recycled` whose `data` says how it left them (`TakenBackOut`: when, how, which rule or
    who, to the pool or to a colleague) — and nothing of the lead as it is now.

    Its owner opening it for the first time stamps `openedAt` (the first-contact ladder stops).
    """
    with ctx.db.read() as session:
        try:
            customer, _ = get_visible(session, user, customer_id)
        except ApiError as exc:
            gone = service.taken_back(session, user, customer_id) if exc.code == "customer_not_found" else None
            if gone is None:
                raise
            raise ApiError(
                404, "customer_recycled", "线索已被收回，您已无法查看", gone.model_dump(by_alias=True, mode="json")
            ) from exc
        unopened = customer.owner_id == user.id and customer.opened_at is None
        out = customers_out(session, [customer])[0]
        out.first_follow_up_at = first_follow_up_of(session, customer)
    if unopened:
        with ctx.db.write() as session:
            if open_leads(ctx, session, user, [customer_id], ctx.clock.now()):
                out.opened_at = session.scalar(select(Customer.opened_at).where(Customer.id == customer_id))
                out.sla_next_at = None
    return Envelope(data=out)


def single_out(session: Session, result: ChangeResult) -> AssignedCustomer:
    """The lead as the answer shows it; its `notificationData` is added by `with_notification_data`."""
    customer = (result.changed or result.unchanged)[0]
    return AssignedCustomer.model_validate(customer_values(session, [customer])[0])


def with_notification_data(ctx: AppContext, out: AssignedCustomer, result: ChangeResult) -> AssignedCustomer:
    """Once committed: the notifications' rows exist (the ledger writes them as the commit's last step), so
    their ids do; built from the objects in hand, no read."""
    data = notification_data(ctx, result.notifications, result.people)
    out.notification_data = data[0] if data else None
    return out


def batch_out(session: Session, result: ChangeResult) -> BatchResult:
    """The answer to a batch; its `notificationData` is filled in after the commit (`with_batch_data`)."""
    return BatchResult(
        batch_id=result.batch_id,
        customers=customers_out(session, result.changed),
        unchanged=[c.id for c in result.unchanged],
        failed=[ItemFailureOut(customer_id=f.customer_id, code=f.code, message=f.message) for f in result.failed],
        notification_data=[],
    )


def with_batch_data(ctx: AppContext, out: BatchResult, result: ChangeResult) -> BatchResult:
    out.notification_data = notification_data(ctx, result.notifications, result.people)
    return out


ASSIGNED = TypeAdapter(Envelope[AssignedCustomer])
BATCH = TypeAdapter(Envelope[BatchResult])


def answer(adapter: TypeAdapter[Any], envelope: Envelope) -> Response:
    """The JSON FastAPI would send for the route's `response_model` (the same serializer, the same bytes),
    without checking again what was built from checked values: for a sync route FastAPI revalidates the
    returned object in another trip to a worker thread before serializing it."""
    return Response(adapter.dump_json(envelope, by_alias=True), media_type="application/json")


def _assign(ctx: AppContext, user: CurrentUser, customer_id: int, body: AssignBody, via: str) -> Response:
    with ctx.db.write() as session:
        result = actions.assign_one(ctx, session, user, customer_id, body.assigned_to, via, body.version)
        out = single_out(session, result)
    out = with_notification_data(ctx, out, result)
    message = "分配成功" if result.changed else "线索已属于该用户，无需分配"
    return answer(ASSIGNED, Envelope[AssignedCustomer].model_construct(success=True, message=message, data=out))


# The two single-lead routes are the hot path (issue 17): on PostgreSQL they run on the event loop, their
# statements awaited on psycopg's asyncio connection (`Database.on_loop`), not in a worker thread.


@router.patch("/{customer_id:int}/assign", response_model=Envelope[AssignedCustomer])
async def assign_web(customer_id: int, body: AssignBody, ctx: Ctx, user: CurrentUser) -> Response:
    """Assign one lead (web console)."""
    return await ctx.db.on_loop(_assign, ctx, user, customer_id, body, "web")


@router.patch("/miniprogram/{customer_id:int}/assign", response_model=Envelope[AssignedCustomer])
async def assign_miniprogram(customer_id: int, body: AssignBody, ctx: Ctx, user: CurrentUser) -> Response:
    """Assign one lead (WeChat mini program)."""
    return await ctx.db.on_loop(_assign, ctx, user, customer_id, body, "miniprogram")


def _batch_message(result: ChangeResult) -> str:
    return f"已分配 {len(result.changed)} 条，未变化 {len(result.unchanged)} 条，失败 {len(result.failed)} 条"


def _batch(ctx: AppContext, user: CurrentUser, body: BatchAssignBody, *, from_pool: bool) -> Response:
    with ctx.db.write() as session:
        batch = actions.BatchInput(body.customer_ids, body.assigned_to)
        result = actions.assign_batch(ctx, session, user, batch, from_pool=from_pool)
        out = batch_out(session, result)
    out = with_batch_data(ctx, out, result)
    return answer(BATCH, Envelope[BatchResult](message=_batch_message(result), data=out))


@router.post("/batch-assign", response_model=Envelope[BatchResult])
def batch_assign(body: BatchAssignBody, ctx: Ctx, user: CurrentUser) -> Response:
    """Assign many leads to one salesperson; one digest notification per recipient."""
    return _batch(ctx, user, body, from_pool=False)


@router.post("/public-pool/assign", response_model=Envelope[BatchResult])
def public_pool_assign(body: BatchAssignBody, ctx: Ctx, user: CurrentUser) -> Response:
    """Hand leads out of the public pool (公海) to one salesperson."""
    return _batch(ctx, user, body, from_pool=True)


@router.post("/{customer_id:int}/claim", response_model=Envelope[CustomerOut])
def claim(customer_id: int, ctx: Ctx, user: CurrentUser) -> Envelope:
    """A salesperson claims a lead from the public pool."""
    with ctx.db.write() as session:
        result = actions.claim(ctx, session, user, customer_id)
        out = customers_out(session, result.changed or result.unchanged)[0]
    return Envelope(message="领取成功" if result.changed else "该线索已在您名下", data=out)


@router.post("/{customer_id:int}/release", response_model=Envelope[CustomerOut])
def release(customer_id: int, ctx: Ctx, user: CurrentUser, body: ReleaseBody | None = None) -> Envelope:
    """Return a lead to a pool: the owner's team pool if the team has one, else the company pool (公海)."""
    with ctx.db.write() as session:
        result = actions.release(ctx, session, user, customer_id, body.reason if body else None)
        out = customers_out(session, result.changed)[0]
    where = f"线索池「{out.pool_name}」" if out.pool_id is not None else "公海"
    return Envelope(message=f"已释放到{where}", data=out)


@router.get("/{customer_id:int}/assignments", response_model=Envelope[list[AssignmentOut]])
def history(customer_id: int, ctx: Ctx, user: CurrentUser) -> Envelope:
    """Every ownership change of one lead, newest first."""
    with ctx.db.read() as session:
        out = service.history(session, user, customer_id)
    return Envelope(data=out)
