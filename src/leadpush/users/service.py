"""Users: creating, listing and changing them, issuing, checking and revoking API tokens."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from leadpush.db import after_commit
from leadpush.errors import ApiError, not_found
from leadpush.notify.signals import Signals
from leadpush.permissions import team_members
from leadpush.teams.service import ensure_team, require_team
from leadpush.text import single_line
from leadpush.users.models import ROLES, ApiToken, User

TOKEN_PREFIX = "lp_"
# Ids are INTEGER columns (32-bit on PostgreSQL): a larger number cannot name a row, and handing it to the
# database would fail the query (a 500) instead of answering "not found".
MAX_ID = 2**31 - 1
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def is_db_id(value: int | None) -> bool:
    """Could `value` be a row id? (False for None, 0, negatives and numbers too large for the column.)"""
    return value is not None and not isinstance(value, bool) and 0 < value <= MAX_ID


def clean_text(value: str | None) -> str | None:
    """Drop control characters (PostgreSQL refuses NUL in text) and surrounding blanks."""
    if value is None:
        return None
    return CONTROL_RE.sub("", value).strip()


def get_user(session: Session, user_id: int) -> User | None:
    return session.get(User, user_id) if is_db_id(user_id) else None


def existing_user(session: Session, user_id: int) -> User:
    """The user with this id, or a 404."""
    user = get_user(session, user_id)
    if user is None:
        raise not_found("user")
    return user


def users_by_id(session: Session, ids: Collection[int | None]) -> dict[int, User]:
    wanted = {i for i in ids if is_db_id(i)}
    if not wanted:
        return {}
    return {u.id: u for u in session.scalars(select(User).where(User.id.in_(wanted)))}


def get_assignee(session: Session, user_id: int) -> User:
    """The user a lead is to go to, or a 404 naming the id."""
    user = get_user(session, user_id)
    if user is None:
        raise ApiError(404, "user_not_found", f"用户 {user_id} 不存在")
    return user


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


def valid_token_hashes(session: Session, hashes: Collection[str]) -> set[str]:
    """Which of these token hashes still sign someone in (not revoked, user active), as `authenticate`."""
    items = list(hashes)
    valid: set[str] = set()
    for start in range(0, len(items), 500):
        valid.update(
            session.scalars(
                select(ApiToken.token_hash)
                .join(User, User.id == ApiToken.user_id)
                .where(
                    ApiToken.token_hash.in_(items[start : start + 500]),
                    ApiToken.revoked_at.is_(None),
                    User.active.is_(True),
                )
            )
        )
    return valid


def end_sessions_after_commit(session: Session, signals: Signals, user_id: int) -> None:
    """Once this transaction (a revoke, a deactivation) commits, every api process closes the user's
    sockets and long polls whose token no longer signs in."""
    after_commit(session, lambda: signals.auth_changed({user_id}))


def check_role(role: str) -> None:
    if role not in ROLES:
        raise ApiError(422, "invalid_role", f"角色必须是 {' / '.join(ROLES)} 之一")


FIELD_LIMITS = {
    "name": ("姓名", 64),
    "team": ("团队", 64),
    "wechat_openid": ("openid", 128),
    "wecom_userid": ("企业微信 userid", 64),
}


def check_fields(**values: str | None) -> dict[str, str | None]:
    """Clean the text fields of a user (blank = unset) and refuse ones too long for their column."""
    out: dict[str, str | None] = {}
    for key, value in values.items():
        label, limit = FIELD_LIMITS[key]
        cleaned = clean_text(value) or None
        try:
            cleaned = cleaned and single_line(cleaned, label)
        except ValueError as exc:
            raise ApiError(422, "validation_error", str(exc)) from exc
        if cleaned is not None and len(cleaned) > limit:
            raise ApiError(422, "validation_error", f"{label}不能超过 {limit} 个字符")
        out[key] = cleaned
    return out


def create_user(
    session: Session,
    *,
    name: str,
    role: str,
    team: str | None = None,
    wechat_openid: str | None = None,
    wecom_userid: str | None = None,
    capacity: int | None = None,
    create_missing_team: bool = False,
) -> tuple[User, str]:
    """Create a user and their first API token (returned once, stored only as a hash).

    The team must exist (422 `team_not_found`) unless `create_missing_team` (the CLI) makes it.
    """
    check_role(role)
    fields = check_fields(name=name, team=team, wechat_openid=wechat_openid, wecom_userid=wecom_userid)
    if not fields["name"]:
        raise ApiError(422, "invalid_name", "姓名不能为空")
    if capacity is not None and capacity < 0:
        raise ApiError(422, "invalid_capacity", "线索上限不能为负数")
    if create_missing_team:
        ensure_team(session, fields["team"])
    else:
        require_team(session, fields["team"])
    user = User(
        role=role,
        **fields,
        capacity=capacity,
        active=True,
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:
        raise ApiError(409, "identity_taken", "该微信 openid 或企业微信账号已绑定其他用户") from exc
    return user, issue_token(session, user)


def list_users(session: Session, actor: User) -> list[User]:
    """Admins see everyone; managers their team (to pick an assignee); sales themselves."""
    query = select(User).order_by(User.id)
    if actor.role == "manager":
        query = query.where(team_members(actor))
    elif actor.role == "sales":
        query = query.where(User.id == actor.id)
    return list(session.scalars(query).all())


def check_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """An update's fields, checked and cleaned before anything is written."""
    for key in ("name", "role", "active"):
        if key in changes and changes[key] is None:
            raise ApiError(422, "validation_error", f"参数错误：{key} 不能为空")
    if "role" in changes:
        check_role(changes["role"])
    text = {k: changes[k] for k in FIELD_LIMITS if k in changes}
    changes.update(check_fields(**text))
    if "name" in changes and not changes["name"]:
        raise ApiError(422, "invalid_name", "姓名不能为空")
    return changes


def update_user(session: Session, signals: Signals, user_id: int, changes: dict[str, Any]) -> User:
    """Apply checked changes (`check_changes`); deactivating someone ends their sessions once committed."""
    user = existing_user(session, user_id)
    if "team" in changes:
        require_team(session, changes["team"])
    for key, value in changes.items():
        setattr(user, key, value)
    try:
        session.flush()
    except IntegrityError as exc:
        raise ApiError(409, "identity_taken", "该微信 openid 或企业微信账号已绑定其他用户") from exc
    if changes.get("active") is False:
        end_sessions_after_commit(session, signals, user_id)
    return user


def revoke_tokens(session: Session, signals: Signals, user_id: int, now: datetime) -> User:
    """Revoke every token of a user; their sockets and long polls end once committed."""
    user = existing_user(session, user_id)
    session.execute(
        update(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None)).values(revoked_at=now)
    )
    end_sessions_after_commit(session, signals, user_id)
    return user
