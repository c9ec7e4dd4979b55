"""FastAPI dependencies: the app context and the signed-in user."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import Depends, Request
from starlette.datastructures import Headers

from leadpush.context import AppContext
from leadpush.errors import ApiError
from leadpush.users.authcache import from_copy, signed_in
from leadpush.users.models import ApiToken, User
from leadpush.users.tokens import INTAKE_PREFIX

# Where the edge middleware leaves the user it signed in before reading a request's body (see app.py).
SIGNED_IN_USER = "leadpush.user"


# The dependencies here are `async def` on purpose: FastAPI runs a plain `def` dependency in a worker thread,
# a hand-off (and a wait for the interpreter) per dependency per request. They do no blocking work on the
# event loop: what may read or write the database goes to a thread.


async def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx


def bearer_token(headers: Headers) -> str | None:
    """The token of an `Authorization: Bearer` header (`request.headers`, not the request itself)."""
    header = headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def client_address(request: Request) -> str:
    # The proxy-headers middleware has already put the real client here when the peer is a trusted proxy.
    return request.client.host if request.client else "unknown"


def authenticate_or_refuse(ctx: AppContext, token: str, address: str) -> User:
    """Check a token (see `token_or_refuse`); the user it signs in."""
    return token_or_refuse(ctx, token, address)[0]


def token_or_refuse(ctx: AppContext, token: str, address: str) -> tuple[User, ApiToken]:
    """Check a token (an API token or a live session), recording its use at most once a minute.

    A valid token always signs in; only failures are counted and throttled.

    Once a client address made too many failed attempts in a minute, its further bad tokens are refused
    with 429 (a lockout, so clients back off instead of giving up) while valid tokens from the same
    address, e.g. colleagues behind one office NAT, keep working. Tokens are 256-bit random, so answering
    a right guess during the lockout teaches a guesser nothing it could use.
    """
    now = ctx.clock.now()
    found = signed_in(ctx.db, token, now=now, settings=ctx.settings)
    if found is not None:
        row = found[1]
        if ctx.token_uses.due(row, now):
            ctx.token_uses.record_use(ctx.db, row, now)
        return found
    limit = ctx.settings.auth_failures_per_minute
    ctx.limiter.refuse_if_over("auth-fail", address, limit)
    ctx.limiter.hit("auth-fail", address)
    if token.startswith(INTAKE_PREFIX):
        raise ApiError(
            401,
            "intake_token_not_allowed",
            "线索接入令牌（lpi_ 开头）只能用于 POST /api/leads/inbound，不能调用其他接口",
        )
    raise ApiError(401, "invalid_token", "登录凭证无效或已失效")


def user_from_headers(ctx: AppContext, headers: Headers, address: str) -> User:
    """The user an `Authorization: Bearer` header names (401 / 429 otherwise)."""
    token = bearer_token(headers)
    if token is None:
        raise ApiError(401, "unauthorized", "请先登录：缺少 Authorization: Bearer <token>")
    return authenticate_or_refuse(ctx, token, address)


async def user_from_headers_async(ctx: AppContext, headers: Headers, address: str) -> User:
    """`user_from_headers` for the event loop: a token this process holds a recent copy of signs in right
    here (its use recorded in a thread when due, as `token_or_refuse` does); anything else (a first sight, a
    wrong token, the lockout) is checked in a thread."""
    token = bearer_token(headers)
    now = ctx.clock.now()
    found = from_copy(ctx.db, token, now=now, settings=ctx.settings) if token else None
    if found is None:
        return await to_thread.run_sync(user_from_headers, ctx, headers, address)
    user, row = found
    if ctx.token_uses.due(row, now):
        await to_thread.run_sync(ctx.token_uses.record_use, ctx.db, row, now)
    return user


async def current_user(request: Request) -> User:
    # The context straight from the app, not `Depends(get_ctx)`: FastAPI solves a sub-dependency (its own
    # walk over path, query, header and cookie parameters) on every request even when its value is cached.
    signed_in = request.scope.get("state", {}).get(SIGNED_IN_USER)
    if signed_in is not None:
        return signed_in
    ctx: AppContext = request.app.state.ctx
    return await user_from_headers_async(ctx, request.headers, client_address(request))


def require_role(*roles: str):  # noqa: ANN201 - returns a dependency
    async def check(user: Annotated[User, Depends(current_user)]) -> User:
        if user.role not in roles:
            raise ApiError(403, "forbidden", "没有权限执行此操作")
        return user

    return check


Ctx = Annotated[AppContext, Depends(get_ctx)]
CurrentUser = Annotated[User, Depends(current_user)]
AdminUser = Annotated[User, Depends(require_role("admin"))]
StaffUser = Annotated[User, Depends(require_role("admin", "manager"))]
