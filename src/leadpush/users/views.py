"""HTTP routes for users and API tokens."""

from __future__ import annotations

from fastapi import APIRouter

from leadpush.deps import AdminUser, Ctx, CurrentUser
from leadpush.errors import ApiError
from leadpush.schemas import Envelope
from leadpush.users import service
from leadpush.users.schemas import UserCreate, UserOut, UserUpdate, UserWithToken

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
        user, token = service.create_user(session, **body.model_dump())
        out = UserWithToken(user=UserOut.model_validate(user), token=token)
    return Envelope(message="用户已创建", data=out)


@router.patch("/users/{user_id:int}", response_model=Envelope[UserOut])
def update_user(user_id: int, body: UserUpdate, ctx: Ctx, admin: AdminUser) -> Envelope:
    changes = service.check_changes(body.model_dump(exclude_unset=True))
    if user_id == admin.id and (changes.get("active") is False or changes.get("role", "admin") != "admin"):
        # An admin locking themselves out could leave the company without one.
        raise ApiError(409, "cannot_demote_self", "不能停用自己的账号或取消自己的管理员角色")
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
