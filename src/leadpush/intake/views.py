"""HTTP routes of lead intake: lead sources (admins), and the two inbound endpoints other systems call.

The inbound endpoints sign in with a lead source's credentials, not a user's: an intake token (Bearer
lpi_...) for POST /api/leads/inbound, an HMAC signature for the form webhook. The app's sign-in middleware
leaves them alone (see app.signs_in_by_header); the token is checked here before the body is read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from leadpush.context import AppContext
from leadpush.deps import AdminUser, Ctx, bearer_token, client_address
from leadpush.errors import ApiError
from leadpush.intake import actions, service
from leadpush.intake.models import LeadSource
from leadpush.intake.schemas import (
    InboundBatchOut,
    InboundItemOut,
    LeadSourceCreate,
    LeadSourceOut,
    LeadSourceSecrets,
    LeadSourceUpdate,
)
from leadpush.schemas import Envelope
from leadpush.users.tokens import INTAKE_PREFIX, SESSION_PREFIX, TOKEN_PREFIX

router = APIRouter(prefix="/api/lead-sources", tags=["intake"])
inbound = APIRouter(prefix="/api/leads/inbound", tags=["intake"])

INBOUND_PATH = "/api/leads/inbound"
T = TypeVar("T")


# --- lead sources (admins) --------------------------------------------------------------------------------------


def _secrets(ctx: AppContext, row: LeadSource, token: str, secret: str) -> LeadSourceSecrets:
    base = ctx.settings.public_url.rstrip("/")
    return LeadSourceSecrets(
        source=service.source_out(row),
        token=token,
        signing_secret=secret,
        inbound_url=f"{base}{INBOUND_PATH}",
        form_url=f"{base}{INBOUND_PATH}/{quote(row.key, safe='')}/form",
    )


@router.get("", response_model=Envelope[list[LeadSourceOut]])
def list_sources(ctx: Ctx, _admin: AdminUser) -> Envelope:
    """Every lead source (tokens and secrets are never shown again after creation or rotation)."""
    with ctx.db.read() as session:
        out = [service.source_out(r) for r in service.list_sources(session)]
    return Envelope(data=out)


@router.post("", response_model=Envelope[LeadSourceSecrets], status_code=201)
def create_source(body: LeadSourceCreate, ctx: Ctx, _admin: AdminUser) -> Envelope:
    """A new lead source; its intake token and signing secret are in this answer only."""
    with ctx.db.write() as session:
        row, token, secret = service.create_source(session, body, ctx.clock.now())
        out = _secrets(ctx, row, token, secret)
    return Envelope(message="线索来源已创建：接入令牌和签名密钥只显示这一次，请立即保存", data=out)


SourceId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("/{source_id:int}", response_model=Envelope[LeadSourceOut])
def get_source(source_id: SourceId, ctx: Ctx, _admin: AdminUser) -> Envelope:
    with ctx.db.read() as session:
        out = service.source_out(service.get_source(session, source_id))
    return Envelope(data=out)


@router.patch("/{source_id:int}", response_model=Envelope[LeadSourceOut])
def update_source(source_id: SourceId, body: LeadSourceUpdate, ctx: Ctx, _admin: AdminUser) -> Envelope:
    """Change a source: name, key (the label on its future leads), mapping, duplicate policy, defaults, enabled."""
    changes = body.model_dump(exclude_unset=True)
    with ctx.db.write() as session:
        row = service.update_source(session, source_id, changes, ctx.clock.now())
        out = service.source_out(row)
    return Envelope(message="线索来源已保存", data=out)


@router.post("/{source_id:int}/rotate", response_model=Envelope[LeadSourceSecrets])
def rotate_source(source_id: SourceId, ctx: Ctx, _admin: AdminUser) -> Envelope:
    """A new intake token and signing secret (shown once); the old ones stop working at once."""
    with ctx.db.write() as session:
        row, token, secret = service.rotate_source(session, source_id, ctx.clock.now())
        out = _secrets(ctx, row, token, secret)
    return Envelope(message="已生成新的接入令牌和签名密钥，旧的已失效：新的只显示这一次", data=out)


@router.delete("/{source_id:int}", response_model=Envelope[LeadSourceOut])
def delete_source(source_id: SourceId, ctx: Ctx, _admin: AdminUser) -> Envelope:
    """Delete a source; its leads stay (with their source label), its token and secret stop working."""
    with ctx.db.write() as session:
        out = service.source_out(service.delete_source(session, source_id))
    return Envelope(message="线索来源已删除", data=out)


# --- inbound ----------------------------------------------------------------------------------------------------


def source_from_token(ctx: AppContext, token: str | None, address: str) -> int:
    """The id of the enabled source an intake token belongs to (401 / 403 / 429 otherwise)."""
    if token is None:
        raise ApiError(401, "unauthorized", "缺少 Authorization: Bearer <线索接入令牌>")
    if token.startswith((TOKEN_PREFIX, SESSION_PREFIX)) and not token.startswith(INTAKE_PREFIX):
        raise ApiError(
            401,
            "intake_token_required",
            "这是用户令牌：线索接入请使用线索来源的接入令牌（lpi_ 开头，在「线索来源」页创建）",
        )
    with ctx.db.read() as session:
        row = service.source_by_token(session, token)
        found = (row.id, row.enabled) if row is not None else None
    if found is None:
        ctx.limiter.refuse_if_over("auth-fail", address, ctx.settings.auth_failures_per_minute)
        ctx.limiter.hit("auth-fail", address)
        raise ApiError(401, "invalid_intake_token", "线索接入令牌无效或已被轮换")
    if not found[1]:
        raise ApiError(403, "source_disabled", "该线索来源已停用")
    return found[0]


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "请求体不是合法的 JSON") from None


def with_retry(ctx: AppContext, work: Callable[[Session], T]) -> T:
    """Run `work` in a write transaction; if a concurrent request saved the same external id first (a unique
    index refused ours), run it again: it then finds that lead and answers it as a repeat."""
    attempts = 3
    for attempt in range(attempts):
        try:
            with ctx.db.write() as session:
                return work(session)
        except IntegrityError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _intake(
    ctx: AppContext, source_id: int, raws: list[Any], fallback_external_id: str | None = None
) -> list[InboundItemOut]:
    def work(session: Session) -> list[InboundItemOut]:
        source = session.get(LeadSource, source_id)
        if source is None:
            raise service.not_found()
        if not source.enabled:
            raise ApiError(403, "source_disabled", "该线索来源已停用")
        return actions.receive_leads(ctx, session, source, raws, fallback_external_id=fallback_external_id)

    return with_retry(ctx, work)


def single_answer(item: InboundItemOut, response: Response) -> Envelope:
    if not item.ok:
        details = [e.model_dump(by_alias=True) for e in item.errors]
        first = item.errors[0] if item.errors else None
        message = f"参数错误：{first.field} {first.message}" if first else "参数错误"
        raise ApiError(422, "validation_error", message, details)
    response.status_code = 201 if item.created else 200
    if item.created:
        message = "线索已创建" + ("（电话与已有线索相同，已标记疑似重复）" if item.duplicate_of else "")
    elif item.duplicate == "external_id":
        message = "该线索已接收过（externalId 重复），未重复创建"
    else:
        message = "电话与已有线索相同，已合并到该线索并通知负责人"
    return Envelope(message=message, data=item)


def batch_answer(items: list[InboundItemOut]) -> Envelope:
    out = InboundBatchOut(
        total=len(items),
        created=sum(1 for i in items if i.created),
        duplicates=sum(1 for i in items if i.duplicate == "external_id"),
        merged=sum(1 for i in items if i.merged and i.duplicate == "phone"),
        flagged=sum(1 for i in items if i.created and i.duplicate_of is not None),
        failed=sum(1 for i in items if not i.ok),
        items=items,
    )
    message = f"共 {out.total} 条：新建 {out.created}，重复 {out.duplicates}，合并 {out.merged}，失败 {out.failed}"
    if out.failed == out.total:
        raise ApiError(422, "inbound_nothing_valid", "没有可接收的线索：" + message, out.model_dump(by_alias=True))
    return Envelope(message=message, data=out)


INBOUND_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": '一条线索（JSON 对象），或 {"leads": [...]} 一批线索；字段按该来源的字段映射读取',
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


@inbound.post(
    "",
    response_model=Envelope[InboundItemOut] | Envelope[InboundBatchOut],
    status_code=201,
    openapi_extra=INBOUND_BODY,
)
async def receive(request: Request, response: Response, ctx: Ctx) -> Envelope:
    """Leads from a form, an ad platform or another system, signed in with a lead source's intake token.

    One lead (an object: 201 created, 200 repeat or merged) or a batch `{"leads": [...]}` (up to
    LEADPUSH_MAX_INBOUND_BATCH; 200 with one answer per item by index: the valid ones are saved, the
    invalid ones reported). Idempotent by (source, externalId).
    """
    source_id = await run_in_threadpool(source_from_token, ctx, bearer_token(request.headers), client_address(request))
    data = parse_json(await request.body())
    if isinstance(data, dict) and "leads" in data:
        raws = data["leads"]
        if not isinstance(raws, list):
            raise ApiError(422, "validation_error", "参数错误：leads 必须是数组")
    elif isinstance(data, list):
        raws = data
    elif isinstance(data, dict):
        items = await run_in_threadpool(_intake, ctx, source_id, [data])
        return single_answer(items[0], response)
    else:
        raise ApiError(422, "validation_error", '参数错误：请求体必须是一条线索（JSON 对象）或 {"leads": [...]}')
    if not raws:
        raise ApiError(422, "batch_empty", "线索列表不能为空")
    limit = ctx.settings.max_inbound_batch
    if len(raws) > limit:
        raise ApiError(422, "batch_too_large", f"一次最多接收 {limit} 条线索")
    items = await run_in_threadpool(_intake, ctx, source_id, raws)
    response.status_code = 200
    return batch_answer(items)


FORM_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "一条线索：JSON 对象或 application/x-www-form-urlencoded 表单",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
        },
    }
}


def form_fields(body: bytes, content_type: str) -> Any:
    """The submitted fields: a JSON object, or a urlencoded form (a repeated field becomes a list)."""
    if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=1000)
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "invalid_form", "表单不是合法的 UTF-8 urlencoded 内容") from None
        fields: dict[str, Any] = {}
        for key, value in pairs:
            if key in fields:
                previous = fields[key]
                fields[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
            else:
                fields[key] = value
        return fields
    data = parse_json(body)
    if not isinstance(data, dict):
        raise ApiError(422, "validation_error", "参数错误：表单 webhook 每次提交一条线索（JSON 对象）")
    return data


def check_form(
    ctx: AppContext, key: str, timestamp: str | None, signature: str | None, body: bytes, address: str
) -> int:
    """The source a signed form submission is for (404 unknown, 401 bad or stale signature, 403 disabled)."""
    with ctx.db.read() as session:
        row = service.source_by_key(session, key)
        found = (row.id, row.enabled, row.signing_secret) if row is not None else None
    if found is None:
        raise service.not_found()
    source_id, enabled, secret = found
    tolerance = ctx.settings.intake_signature_tolerance_seconds
    # Bad signatures count as failed sign-ins of the client address (429 once too many in a minute).
    ctx.limiter.refuse_if_over("auth-fail", address, ctx.settings.auth_failures_per_minute)
    try:
        service.check_signature(secret, timestamp, signature, body, ctx.clock.now(), tolerance)
    except ApiError as exc:
        if exc.code == "bad_signature":
            ctx.limiter.hit("auth-fail", address)
        raise
    if not enabled:
        raise ApiError(403, "source_disabled", "该线索来源已停用")
    return source_id


@inbound.post(
    "/{source_key}/form",
    response_model=Envelope[InboundItemOut],
    status_code=201,
    openapi_extra=FORM_BODY,
)
async def receive_form(
    source_key: Annotated[str, Path(max_length=100)], request: Request, response: Response, ctx: Ctx
) -> Envelope:
    """The signed generic form webhook (web forms, ad platforms): one lead per call.

    Headers: `X-Leadpush-Timestamp` (Unix seconds) and `X-Leadpush-Signature: sha256=<hex HMAC-SHA256 of
    "<timestamp>.<raw body>" with the source's signing secret>`; the timestamp must be within 5 minutes
    (LEADPUSH_INTAKE_SIGNATURE_TOLERANCE_SECONDS). A replayed submission answers the lead it created: by its
    externalId, or without one by a hash of the body.
    """
    body = await request.body()
    headers = request.headers
    source_id = await run_in_threadpool(
        check_form,
        ctx,
        source_key,
        headers.get("x-leadpush-timestamp"),
        headers.get("x-leadpush-signature"),
        body,
        client_address(request),
    )
    fields = form_fields(body, headers.get("content-type", ""))
    body_id = "body:" + hashlib.sha256(body).hexdigest()[:40]
    items = await run_in_threadpool(_intake, ctx, source_id, [fields], body_id)
    return single_answer(items[0], response)
