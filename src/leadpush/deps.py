"""FastAPI dependencies: the app context and the signed-in user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from leadpush.context import AppContext
from leadpush.errors import ApiError
from leadpush.users.models import User
from leadpush.users.service import authenticate


def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def authenticate_or_refuse(ctx: AppContext, token: str, address: str) -> User:
    """Check a token; too many failures from one address in a minute are refused (429) for a while."""
    limit = ctx.settings.auth_failures_per_minute
    ctx.limiter.refuse_if_over("auth-fail", address, limit)
    with ctx.db.read() as session:
        user = authenticate(session, token)
    if user is None:
        ctx.limiter.hit("auth-fail", address)
        raise ApiError(401, "invalid_token", "登录凭证无效或已失效")
    return user


def current_user(request: Request, ctx: Annotated[AppContext, Depends(get_ctx)]) -> User:
    token = bearer_token(request)
    if token is None:
        raise ApiError(401, "unauthorized", "请先登录：缺少 Authorization: Bearer <token>")
    return authenticate_or_refuse(ctx, token, client_address(request))


def require_role(*roles: str):  # noqa: ANN201 - returns a dependency
    def check(user: Annotated[User, Depends(current_user)]) -> User:
        if user.role not in roles:
            raise ApiError(403, "forbidden", "没有权限执行此操作")
        return user

    return check


Ctx = Annotated[AppContext, Depends(get_ctx)]
CurrentUser = Annotated[User, Depends(current_user)]
AdminUser = Annotated[User, Depends(require_role("admin"))]
StaffUser = Annotated[User, Depends(require_role("admin", "manager"))]
