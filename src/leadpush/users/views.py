"""HTTP routes for users, signing in and out, passwords and API tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from leadpush.deps import AdminUser, Ctx, CurrentUser, bearer_token, client_address
from leadpush.errors import ApiError
from leadpush.schemas import Envelope
from leadpush.users import passwords, service
from leadpush.users.login import password_sign_in
from leadpush.users.schemas import (
    LoginBody,
    NewToken,
    PasswordChange,
    PasswordReset,
    SessionOut,
    TokenCreate,
    TokenOut,
    UserCreate,
    UserOut,
    UserUpdate,
    UserWithToken,
)
from leadpush.users.sessions import end_session

router = APIRouter(prefix="/api", tags=["users"])


@router.get("/me", response_model=Envelope[UserOut])
def me(user: CurrentUser) -> Envelope:
    return Envelope(data=UserOut.model_validate(user))


@router.get("/users", response_model=Envelope[list[UserOut]])
def list_users(ctx: Ctx, user: CurrentUser) -> Envelope:
    """Admins see everyone; managers their team (to pick an assignee); sales themselves."""
    with ctx.db.read() as session:
        rows = service.list_users(session, user)
    return Envelope(data=[UserOut.model_validate(u) for u in rows])


@router.post("/users", response_model=Envelope[UserWithToken], status_code=201)
def create_user(body: UserCreate, ctx: Ctx, admin: AdminUser) -> Envelope:
    with ctx.db.write() as session:
        user, token = service.create_user(session, **body.model_dump(), now=ctx.clock.now())
        out = UserWithToken(user=UserOut.model_validate(user), token=token)
    return Envelope(message="用户已创建", data=out)


@router.patch("/users/{user_id:int}", response_model=Envelope[UserOut])
def update_user(user_id: int, body: UserUpdate, ctx: Ctx, admin: AdminUser) -> Envelope:
    changes = service.check_changes(body.model_dump(exclude_unset=True))
    with ctx.db.write() as session:
        user = service.update_user(session, ctx.signals, user_id, changes)
        out = UserOut.model_validate(user)
    return Envelope(message="用户已更新", data=out)


@router.post("/users/{user_id:int}/tokens", response_model=Envelope[UserWithToken], status_code=201)
def new_token(user_id: int, ctx: Ctx, admin: AdminUser) -> Envelope:
    """Issue another API token for a user (shown once)."""
    ctx.limiter.check("token-issue", str(admin.id), ctx.settings.token_issues_per_minute)
    with ctx.db.write() as session:
        user = service.existing_user(session, user_id)
        token = service.issue_token(session, user)
        out = UserWithToken(user=UserOut.model_validate(user), token=token)
    return Envelope(message="已生成新令牌", data=out)


@router.post("/users/{user_id:int}/tokens/revoke", response_model=Envelope[UserOut])
def revoke_tokens(user_id: int, ctx: Ctx, admin: AdminUser) -> Envelope:
    """Revoke every token of a user (a lost phone, someone leaving)."""
    with ctx.db.write() as session:
        user = service.revoke_tokens(session, ctx.signals, user_id, ctx.clock.now())
        out = UserOut.model_validate(user)
    return Envelope(message="该用户的全部令牌已吊销", data=out)


# --- signing in and out ------------------------------------------------------------------------------------------


@router.post("/auth/login", response_model=Envelope[SessionOut], tags=["auth"])
def login(body: LoginBody, request: Request, ctx: Ctx) -> Envelope:
    """Sign in with a login name and password: a session token (`lps_…`) for `Authorization: Bearer`.

    Wrong password and unknown login name answer alike (401 `invalid_credentials`). Too many failures answer
    429 with Retry-After: `too_many_attempts` (this account on this client address, or this address) or
    `account_locked` (the account, from anywhere).
    """
    signed_in = password_sign_in(ctx, body.login_name, body.password, client_address(request))
    out = SessionOut(
        token=signed_in.token, expires_at=signed_in.expires_at, user=UserOut.model_validate(signed_in.user)
    )
    return Envelope(message="登录成功", data=out)


@router.post("/auth/logout", response_model=Envelope[None], tags=["auth"])
def logout(request: Request, ctx: Ctx, user: CurrentUser) -> Envelope:
    """End the session of the bearer token (its sockets and long polls close). API tokens are revoked on their
    own (DELETE /api/tokens/{id}), not signed out."""
    token = bearer_token(request.headers) or ""
    with ctx.db.write() as session:
        if not end_session(session, user.id, token, ctx.clock.now()):
            raise ApiError(400, "not_a_session", "这是 API 令牌，不是登录会话：请在令牌管理中吊销")
        service.end_sessions_after_commit(session, ctx.signals, user.id)
    return Envelope(message="已退出登录")


# --- passwords ----------------------------------------------------------------------------------------------------


@router.post("/me/password", response_model=Envelope[UserOut], tags=["auth"])
def change_my_password(body: PasswordChange, request: Request, ctx: Ctx, user: CurrentUser) -> Envelope:
    """Set or change one's own password (the current one is needed once there is one); ends one's other
    sessions, keeps this one and API tokens."""
    address = client_address(request)
    if user.login_name is None:
        raise ApiError(422, "login_name_required", "请先让管理员为你设置登录名，再设置密码")
    passwords.check_policy(body.new_password, user.login_name)  # before the (slow) check of the current one
    if user.password_hash is not None:
        limit = ctx.settings.auth_failures_per_minute
        ctx.limiter.refuse_if_over("auth-fail", address, limit)
        matches, _ = passwords.verify_password(body.current_password or "", user.password_hash)
        if not matches:
            ctx.limiter.hit("auth-fail", address)
            raise ApiError(403, "wrong_password", "当前密码不正确")
    with ctx.db.write() as session:
        row = service.existing_user(session, user.id)
        service.set_password(
            session, ctx.signals, row, body.new_password, ctx.clock.now(), keep=bearer_token(request.headers)
        )
        out = UserOut.model_validate(row)
    return Envelope(message="密码已修改，其他设备上的登录已退出", data=out)


@router.post("/users/{user_id:int}/password", response_model=Envelope[UserOut], tags=["auth"])
def reset_password(user_id: int, body: PasswordReset, ctx: Ctx, admin: AdminUser) -> Envelope:
    """Set a user's password (admin): lifts their lockout and ends their sessions; API tokens stay."""
    with ctx.db.write() as session:
        row = service.existing_user(session, user_id)
        service.set_password(session, ctx.signals, row, body.new_password, ctx.clock.now())
        out = UserOut.model_validate(row)
    return Envelope(message="密码已重置，该用户需要重新登录", data=out)


# --- named API tokens ---------------------------------------------------------------------------------------------


def _token_owner(actor: CurrentUser, user_id: int | None) -> int:
    """Whose tokens: one's own; an admin may name anyone."""
    if user_id is None or user_id == actor.id:
        return actor.id
    if actor.role != "admin":
        raise ApiError(403, "forbidden", "只能管理自己的令牌")
    return user_id


@router.get("/tokens", response_model=Envelope[list[TokenOut]], tags=["auth"])
def list_tokens(
    ctx: Ctx,
    user: CurrentUser,
    user_id: Annotated[int | None, Query(alias="userId", ge=1, le=service.MAX_ID)] = None,
) -> Envelope:
    """API tokens (for systems) of the caller, or of anyone for an admin; newest first, revoked included."""
    owner = _token_owner(user, user_id)
    with ctx.db.read() as session:
        service.existing_user(session, owner)
        rows = service.list_api_tokens(session, owner)
    return Envelope(data=[TokenOut.model_validate(r) for r in rows])


@router.post("/tokens", response_model=Envelope[NewToken], status_code=201, tags=["auth"])
def create_token(body: TokenCreate, ctx: Ctx, user: CurrentUser) -> Envelope:
    """A named API token, shown this once (stored only as a hash)."""
    owner = _token_owner(user, body.user_id)
    ctx.limiter.check("token-issue", str(user.id), ctx.settings.token_issues_per_minute)
    name = service.check_token_name(body.name)
    with ctx.db.write() as session:
        target = service.existing_user(session, owner)
        if not target.active:
            raise ApiError(409, "user_inactive", "该用户已停用，不能生成令牌")
        token, row = service.issue_api_token(session, target, name)
        out = NewToken(**TokenOut.model_validate(row).model_dump(), token=token)
    return Envelope(message="已生成令牌，只显示这一次，请妥善保存", data=out)


@router.delete("/tokens/{token_id:int}", response_model=Envelope[TokenOut], tags=["auth"])
def revoke_token(token_id: int, ctx: Ctx, user: CurrentUser) -> Envelope:
    """Revoke an API token (one's own; an admin anyone's): what uses it is signed out at once."""
    with ctx.db.write() as session:
        row = service.revoke_api_token(session, ctx.signals, user, token_id, ctx.clock.now())
        out = TokenOut.model_validate(row)
    return Envelope(message="令牌已吊销", data=out)
