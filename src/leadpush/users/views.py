"""HTTP routes for users and API tokens."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from leadpush.deps import AdminUser, Ctx, CurrentUser
from leadpush.errors import ApiError, not_found
from leadpush.permissions import team_members
from leadpush.schemas import Envelope
from leadpush.users import service
from leadpush.users.models import ApiToken, User
from leadpush.users.schemas import UserCreate, UserOut, UserUpdate, UserWithToken

router = APIRouter(prefix="/api", tags=["users"])


@router.get("/me", response_model=Envelope[UserOut])
def me(user: CurrentUser) -> Envelope:
    return Envelope(data=UserOut.model_validate(user))


@router.get("/users", response_model=Envelope[list[UserOut]])
def list_users(ctx: Ctx, user: CurrentUser) -> Envelope:
    """Admins see everyone; managers their team (to pick an assignee); sales themselves."""
    query = select(User).order_by(User.id)
    if user.role == "manager":
        query = query.where(team_members(user))
    elif user.role == "sales":
        query = query.where(User.id == user.id)
    with ctx.db.read() as session:
        rows = session.scalars(query).all()
    return Envelope(data=[UserOut.model_validate(u) for u in rows])


@router.post("/users", response_model=Envelope[UserWithToken], status_code=201)
def create_user(body: UserCreate, ctx: Ctx, admin: AdminUser) -> Envelope:
    with ctx.db.write() as session:
        user, token = service.create_user(session, **body.model_dump())
        out = UserWithToken(user=UserOut.model_validate(user), token=token)
    return Envelope(message="用户已创建", data=out)


@router.patch("/users/{user_id:int}", response_model=Envelope[UserOut])
def update_user(user_id: int, body: UserUpdate, ctx: Ctx, admin: AdminUser) -> Envelope:
    changes = body.model_dump(exclude_unset=True)
    for key in ("name", "role", "active"):
        if key in changes and changes[key] is None:
            raise ApiError(422, "validation_error", f"参数错误：{key} 不能为空")
    if "role" in changes:
        service.check_role(changes["role"])
    text = {k: changes[k] for k in service.FIELD_LIMITS if k in changes}
    changes.update(service.check_fields(**text))
    if "name" in changes and not changes["name"]:
        raise ApiError(422, "invalid_name", "姓名不能为空")
    with ctx.db.write() as session:
        user = service.get_user(session, user_id)
        if user is None:
            raise not_found("user")
        for key, value in changes.items():
            setattr(user, key, value)
        try:
            session.flush()
        except IntegrityError as exc:
            raise ApiError(409, "identity_taken", "该微信 openid 或企业微信账号已绑定其他用户") from exc
        if changes.get("active") is False:
            service.end_sessions_after_commit(session, ctx.signals, user_id)
        out = UserOut.model_validate(user)
    return Envelope(message="用户已更新", data=out)


@router.post("/users/{user_id:int}/tokens", response_model=Envelope[UserWithToken], status_code=201)
def new_token(user_id: int, ctx: Ctx, admin: AdminUser) -> Envelope:
    """Issue another API token for a user (shown once)."""
    ctx.limiter.check("token-issue", str(admin.id), ctx.settings.token_issues_per_minute)
    with ctx.db.write() as session:
        user = service.get_user(session, user_id)
        if user is None:
            raise not_found("user")
        token = service.issue_token(session, user)
        out = UserWithToken(user=UserOut.model_validate(user), token=token)
    return Envelope(message="已生成新令牌", data=out)


@router.post("/users/{user_id:int}/tokens/revoke", response_model=Envelope[UserOut])
def revoke_tokens(user_id: int, ctx: Ctx, admin: AdminUser) -> Envelope:
    """Revoke every token of a user (a lost phone, someone leaving)."""
    with ctx.db.write() as session:
        user = service.get_user(session, user_id)
        if user is None:
            raise not_found("user")
        session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=ctx.clock.now())
        )
        service.end_sessions_after_commit(session, ctx.signals, user_id)
        out = UserOut.model_validate(user)
    return Envelope(message="该用户的全部令牌已吊销", data=out)
