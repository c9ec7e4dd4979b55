"""Creating users, issuing and checking API tokens."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from leadpush.errors import ApiError
from leadpush.users.models import ROLES, ApiToken, User

TOKEN_PREFIX = "lp_"


def hash_token(token: str) -> str:
    # Tokens are 256-bit random strings, so a plain SHA-256 is enough (no password stretching needed).
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(session: Session, user: User, name: str | None = None) -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=hash_token(token), prefix=token[:8], name=name))
    return token


def authenticate(session: Session, token: str) -> User | None:
    if not token or len(token) > 200:
        return None
    row = session.execute(
        select(User)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
    ).scalar_one_or_none()
    if row is None or not row.active:
        return None
    return row


def check_role(role: str) -> None:
    if role not in ROLES:
        raise ApiError(422, "invalid_role", f"角色必须是 {' / '.join(ROLES)} 之一")


def create_user(
    session: Session,
    *,
    name: str,
    role: str,
    team: str | None = None,
    wechat_openid: str | None = None,
    wecom_userid: str | None = None,
    capacity: int | None = None,
) -> tuple[User, str]:
    """Create a user and their first API token (returned once, stored only as a hash)."""
    check_role(role)
    name = name.strip()
    if not name:
        raise ApiError(422, "invalid_name", "姓名不能为空")
    user = User(
        name=name,
        role=role,
        team=team or None,
        wechat_openid=wechat_openid or None,
        wecom_userid=wecom_userid or None,
        capacity=capacity,
        active=True,
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:
        raise ApiError(409, "identity_taken", "该微信 openid 或企业微信账号已绑定其他用户") from exc
    return user, issue_token(session, user)
