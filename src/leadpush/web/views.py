"""The web console: Jinja2 page shells, their static files, and the few JSON helpers only the console uses.

Pages carry no lead data: small JavaScript modules call the Bearer-token JSON API and render rows with
`textContent`, so untrusted text (customer names, notes) never reaches the page as markup. Signing in
(a password at /api/auth/login, or an API token exchanged here, see `sign_in`) gives a session token, the
only credential the browser keeps (localStorage); signing out ends it on the server (/api/auth/logout).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import Field

from leadpush.context import AppContext
from leadpush.deps import Ctx, CurrentUser, StaffUser, client_address, token_or_refuse
from leadpush.errors import ApiError
from leadpush.notify import service as notify_service
from leadpush.notify.ledger import unread_count
from leadpush.notify.models import CHANNELS, STATUSES
from leadpush.notify.schemas import NotificationOut
from leadpush.schemas import CamelModel, Envelope, RequestModel
from leadpush.users.models import User
from leadpush.users.schemas import SessionOut, UserOut
from leadpush.users.sessions import session_ends, start_session

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=str(HERE / "templates"))

# The shared JS client kit: an exact copy of clients/js/src/leadpush-client.mjs that clients/js/build.mjs
# writes into the package (a test checks it is current), so an installed leadpush serves it too.
CLIENT_MODULE = STATIC_DIR / "leadpush-client.mjs"
STATIC_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]*\.(js|mjs|css|svg|png)$")
MEDIA_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

# Pages load only their own scripts and talk only to this origin (WebSocket included): a second line of
# defence should a future change ever put data into markup.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


# --- pages ---------------------------------------------------------------------------------------------


def page(request: Request, template: str, *, title: str, nav: str, script: str, **extra: Any) -> Response:
    ctx: AppContext = request.app.state.ctx
    response = templates.TemplateResponse(
        request,
        template,
        {"title": title, "nav": nav, "script": script, "timezone": ctx.settings.timezone, **extra},
    )
    response.headers.update(SECURITY_HEADERS)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/console", status_code=307)


@router.get("/console")
def home(request: Request) -> Response:
    """Sends each user to their start page: managers to the leads table, salespeople to the inbox."""
    return page(request, "home.html", title="控制台", nav="", script="home.js")


@router.get("/console/login")
def login_page(request: Request) -> Response:
    return page(request, "login.html", title="登录", nav="", script="login.js", signed_in=False)


@router.get("/console/customers")
def customers_page(request: Request) -> Response:
    return page(request, "customers.html", title="线索", nav="customers", script="customers.js")


@router.get("/console/customers/import")
def import_page(request: Request) -> Response:
    settings = request.app.state.ctx.settings
    return page(
        request,
        "customers_import.html",
        title="批量导入线索",
        nav="customers",
        script="customers-import.js",
        max_bytes=settings.max_import_bytes,
        max_mb=f"{settings.max_import_bytes / 1_000_000:g}",
        max_rows=settings.max_batch,
    )


# The import template: the Chinese headers the import recognises, with a BOM so that Excel opens it as UTF-8.
IMPORT_TEMPLATE = "\ufeff姓名,电话,来源,负责人,备注\r\n".encode()


@router.get("/console/customers/import/template.csv")
def import_template() -> Response:
    return Response(
        IMPORT_TEMPLATE,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": "attachment; filename=leads-template.csv; "
            "filename*=UTF-8''%E7%BA%BF%E7%B4%A2%E5%AF%BC%E5%85%A5%E6%A8%A1%E6%9D%BF.csv",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get("/console/customers/{customer_id:int}")
def customer_page(request: Request, customer_id: int) -> Response:
    return page(
        request, "customer.html", title="线索详情", nav="customers", script="customer.js", customer_id=customer_id
    )


@router.get("/console/pool")
def pool_page(request: Request) -> Response:
    return page(request, "pool.html", title="公海", nav="pool", script="pool.js")


@router.get("/console/pools")
def pools_page(request: Request) -> Response:
    """线索池管理: admins and managers create and edit pools, their rules and members."""
    return page(request, "pools.html", title="线索池管理", nav="pools", script="pools.js")


@router.get("/console/inbox")
def inbox_page(request: Request) -> Response:
    return page(request, "inbox.html", title="消息", nav="inbox", script="inbox.js")


@router.get("/console/transfer")
def transfer_page(request: Request) -> Response:
    return page(request, "transfer.html", title="自动流转", nav="transfer", script="transfer.js")


@router.get("/console/follow-ups")
def follow_ups_page(request: Request) -> Response:
    return page(request, "followups.html", title="今日跟进", nav="followups", script="followups.js")


@router.get("/console/speed")
def speed_page(request: Request) -> Response:
    return page(request, "speed.html", title="首次联系", nav="speed", script="speed.js")


@router.get("/console/routing")
def routing_page(request: Request) -> Response:
    return page(request, "routing.html", title="分配规则", nav="routing", script="routing.js")


@router.get("/console/users")
def users_page(request: Request) -> Response:
    return page(request, "users.html", title="用户", nav="users", script="users.js")


@router.get("/console/sources")
def sources_page(request: Request) -> Response:
    """Admins: lead sources for forms, ad platforms and other systems (lead intake)."""
    return page(request, "sources.html", title="线索来源", nav="sources", script="sources.js")


@router.get("/console/deliveries")
def deliveries_page(request: Request) -> Response:
    return page(request, "deliveries.html", title="消息发送记录", nav="deliveries", script="deliveries.js")


@router.get("/console/account")
def account_page(request: Request) -> Response:
    """Every role's own account: password and API tokens for integrations."""
    return page(request, "account.html", title="我的账号", nav="account", script="account.js")


# --- static files ------------------------------------------------------------------------------------------


def _static(path: Path) -> FileResponse:
    return FileResponse(
        path,
        media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/console/static/leadpush-client.mjs")
def client_module() -> Response:
    """The shared browser / mini-program client (clients/js, packaged), served as-is so the console uses the same code."""
    if not CLIENT_MODULE.is_file():
        log.error("console: the shared JS client is missing at %s; the live inbox cannot start", CLIENT_MODULE)
        return Response(
            f"// leadpush-client.mjs not found at {CLIENT_MODULE.name}: the live inbox is unavailable\n",
            status_code=404,
            media_type="text/javascript",
        )
    return _static(CLIENT_MODULE)


@router.get("/console/static/{name}")
def static_file(name: str) -> Response:
    path = STATIC_DIR / name
    if not STATIC_NAME.match(name) or not path.is_file():
        raise ApiError(404, "not_found", "文件不存在")
    return _static(path)


# --- JSON helpers for the console (Bearer token, the usual envelope) --------------------------------------


class SignInBody(RequestModel):
    token: str = Field(max_length=200)


def sign_in(ctx: AppContext, token: str, address: str) -> SessionOut:
    """Exchange an API token typed into the sign-in page for a session (401 if bad), under the API's limit on
    failed sign-ins per address (429). A session token is refused: exchanging it would outlive its end."""
    user, row = token_or_refuse(ctx, token.strip(), address)
    if row.kind != "api":
        raise ApiError(422, "not_an_api_token", "这是登录会话，不是 API 令牌：请输入 API 令牌（lp_ 开头）")
    if not user.active:
        raise ApiError(403, "user_inactive", "该账号已停用，请联系管理员")
    now = ctx.clock.now()
    with ctx.db.write() as session:
        fresh = session.get(User, user.id)
        if fresh is None:
            raise ApiError(401, "invalid_token", "登录凭证无效或已失效")
        session_token = start_session(session, fresh, via="token", now=now, settings=ctx.settings, client=address)
        return SessionOut(
            token=session_token, expires_at=session_ends(now, ctx.settings), user=UserOut.model_validate(fresh)
        )


@router.post("/console/api/session", response_model=Envelope[SessionOut])
def create_session(body: SignInBody, request: Request, ctx: Ctx) -> Envelope:
    """The console exchanges an API token for a session and then keeps only the session token."""
    return Envelope(message="登录成功", data=sign_in(ctx, body.token, client_address(request)))


class LoginOptions(CamelModel):
    password: bool
    wecom: bool


@router.get("/console/api/login-options", response_model=Envelope[LoginOptions])
def login_options(ctx: Ctx) -> Envelope:
    """How one may sign in here (public): the sign-in page offers 企业微信登录 only when WeCom is configured."""
    return Envelope(data=LoginOptions(password=True, wecom=ctx.settings.wecom_enabled))


class RecentNotifications(CamelModel):
    items: list[NotificationOut]
    latest_id: int
    unread: int


@router.get("/console/api/notifications/recent", response_model=Envelope[RecentNotifications])
def recent_notifications(ctx: Ctx, user: CurrentUser, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> Envelope:
    """The caller's newest notifications, newest first (the inbox's first screen; live ones come by WebSocket)."""
    with ctx.db.read() as session:
        items = [notify_service.to_out(n) for n in notify_service.newest(session, user.id, limit)]
        unread = unread_count(session, user.id)
    return Envelope(data=RecentNotifications(items=items, latest_id=items[0].id if items else 0, unread=unread))


class DeliveryCount(CamelModel):
    channel: str
    status: str
    count: int


class DeliveryStats(CamelModel):
    channels: list[str]
    statuses: list[str]
    counts: list[DeliveryCount]


@router.get("/console/api/delivery-stats", response_model=Envelope[DeliveryStats])
def delivery_stats(ctx: Ctx, user: StaffUser) -> Envelope:
    """Deliveries by channel and status (admins: everyone; managers: their team), for the monitor's counters."""
    with ctx.db.read() as session:
        rows = notify_service.delivery_counts(session, user)
    counts = [DeliveryCount(channel=c, status=s, count=n) for c, s, n in rows]
    return Envelope(data=DeliveryStats(channels=list(CHANNELS), statuses=list(STATUSES), counts=counts))
