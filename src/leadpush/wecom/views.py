"""WeCom sign-in routes: start (off to WeCom) and callback (back with a code, on to the console).

The callback answers with the sign-in page: on success it carries the new session token in a `<meta>`
element of a no-store page (never in a URL, where history, logs and Referer headers would keep it), and
login.js stores it and goes on; on failure the page says what went wrong, in Chinese, with a `data-code`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from leadpush.deps import Ctx, client_address
from leadpush.errors import ApiError
from leadpush.web.views import page
from leadpush.wecom import signin

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

# Starts allowed per client address and minute, as a multiple of LEADPUSH_AUTH_FAILURES_PER_MINUTE.
STARTS_PER_FAILURE = 5
# Failures that count against the address like a wrong password (WeCom's own trouble does not).
COUNTED_FAILURES = frozenset({"invalid_code", "wecom_not_bound", "not_wecom_member", "user_inactive", "wecom_denied"})


def sign_in_page(
    request: Request,
    *,
    error: ApiError | None = None,
    session_token: str | None = None,
    next_path: str | None = None,
    forget_state: bool = False,
) -> Response:
    response = page(
        request,
        "login.html",
        title="登录",
        nav="",
        script="login.js",
        signed_in=False,
        wecom_error=error,
        wecom_session=session_token,
        wecom_next=next_path,
    )
    if error is not None:
        response.status_code = error.status
    if forget_state:
        response.delete_cookie(signin.STATE_COOKIE, **state_cookie(request))
    return response


def state_cookie(request: Request) -> dict[str, Any]:
    """The state cookie's attributes: set and deleted with the same ones, or a browser keeps it."""
    return {"path": signin.START_PATH, "httponly": True, "samesite": "lax", "secure": request.url.scheme == "https"}


@router.get(signin.START_PATH)
def start(request: Request, ctx: Ctx, next: Annotated[str | None, Query(max_length=2000)] = None) -> Response:
    """Off to WeCom: the OAuth link inside WeCom's browser, the QR login page elsewhere."""
    s = ctx.settings
    if not s.wecom_enabled:
        return sign_in_page(
            request,
            error=ApiError(
                404, "wecom_not_configured", "未启用企业微信登录（管理员尚未配置企业微信应用），请使用其他方式登录"
            ),
        )
    address = client_address(request)
    try:
        # Each start stores a state row: bounded per address (generously: an office behind one NAT signs in
        # together in the morning), and refused while the address is over its limit of failed sign-ins.
        ctx.limiter.refuse_if_over("auth-fail", address, s.auth_failures_per_minute)
        ctx.limiter.check("wecom-start", address, STARTS_PER_FAILURE * s.auth_failures_per_minute)
    except ApiError as exc:
        return sign_in_page(request, error=exc)
    ttl = s.wecom_login_state_seconds
    state = signin.begin(ctx.db, ctx.clock.now(), ttl, signin.safe_next(next))
    link = signin.sign_in_link(
        s,
        uri=signin.redirect_uri(s, str(request.base_url)),
        state=state,
        in_wecom=signin.is_wecom_browser(request.headers.get("user-agent")),
    )
    response = RedirectResponse(link, status_code=302)
    response.headers["Cache-Control"] = "no-store"
    # Only this browser can finish the sign-in it started. Lax: the cookie comes along on WeCom's
    # top-level redirect back to us, but never on a request another site makes in the background.
    response.set_cookie(signin.STATE_COOKIE, state, max_age=ttl, **state_cookie(request))
    return response


@router.get(signin.CALLBACK_PATH)
async def callback(
    request: Request,
    ctx: Ctx,
    code: Annotated[str | None, Query(max_length=512)] = None,
    state: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Back from WeCom: check and spend the state, code -> userid -> the bound user -> a new session."""
    try:
        signin.check_state(state, request.cookies.get(signin.STATE_COOKIE))
    except ApiError as exc:
        # A mismatch leaves the cookie alone: this browser's own sign-in, if one is under way, still counts.
        return sign_in_page(request, error=exc)
    assert state is not None
    try:
        next_path = await to_thread.run_sync(signin.spend_state, ctx.db, state, ctx.clock.now())
        if not code:
            # WeCom sends no code when the person declined.
            raise ApiError(400, "wecom_denied", "未获得企业微信授权，请重新点击“企业微信登录”并在企业微信中确认")
        userid = await signin.member_from_code(ctx, code)
        token = await to_thread.run_sync(signin.open_session, ctx, userid, client_address(request))
    except ApiError as exc:
        log.info("企业微信登录失败：%s", exc.code)
        if exc.code in COUNTED_FAILURES:
            await to_thread.run_sync(ctx.limiter.hit, "auth-fail", client_address(request))
        return sign_in_page(request, error=exc, forget_state=True)
    log.info("企业微信登录成功")
    return sign_in_page(request, session_token=token, next_path=next_path, forget_state=True)
