"""The web console: Jinja2 page shells, their static files, and the few JSON helpers only the console uses.

Pages carry no lead data: small JavaScript modules call the Bearer-token JSON API and render rows with
`textContent`, so untrusted text (customer names, notes) never reaches the page as markup. The token is
kept in the browser's localStorage; signing in only checks it (see `sign_in`).
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
from leadpush.deps import Ctx, CurrentUser, StaffUser, authenticate_or_refuse, client_address
from leadpush.errors import ApiError
from leadpush.notify import service as notify_service
from leadpush.notify.ledger import unread_count
from leadpush.notify.models import CHANNELS, STATUSES
from leadpush.notify.schemas import NotificationOut
from leadpush.schemas import CamelModel, Envelope, RequestModel
from leadpush.users.models import User
from leadpush.users.schemas import UserOut

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


@router.get("/console/customers/{customer_id:int}")
def customer_page(request: Request, customer_id: int) -> Response:
    return page(
        request, "customer.html", title="线索详情", nav="customers", script="customer.js", customer_id=customer_id
    )


@router.get("/console/pool")
def pool_page(request: Request) -> Response:
    return page(request, "pool.html", title="公海", nav="pool", script="pool.js")


@router.get("/console/inbox")
def inbox_page(request: Request) -> Response:
    return page(request, "inbox.html", title="消息", nav="inbox", script="inbox.js")


@router.get("/console/transfer")
def transfer_page(request: Request) -> Response:
    return page(request, "transfer.html", title="自动流转", nav="transfer", script="transfer.js")


@router.get("/console/deliveries")
def deliveries_page(request: Request) -> Response:
    return page(request, "deliveries.html", title="消息发送记录", nav="deliveries", script="deliveries.js")


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


def sign_in(ctx: AppContext, token: str, address: str) -> User:
    """Check an API token typed into the sign-in page (401 if bad), under the API's limit on failed
    sign-ins per address (429)."""
    return authenticate_or_refuse(ctx, token.strip(), address)


@router.post("/console/api/session", response_model=Envelope[UserOut])
def create_session(body: SignInBody, request: Request, ctx: Ctx) -> Envelope:
    user = sign_in(ctx, body.token, client_address(request))
    return Envelope(message="登录成功", data=UserOut.model_validate(user))


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
