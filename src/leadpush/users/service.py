"""Users: creating, listing and changing them, their passwords, issuing, checking and revoking API tokens."""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from leadpush.clock import utcnow
from leadpush.config import Settings
from leadpush.db import after_commit
from leadpush.errors import ApiError, not_found
from leadpush.notify.signals import Signals
from leadpush.permissions import team_members
from leadpush.teams.service import ensure_team, require_team
from leadpush.text import single_line
from leadpush.users import passwords
from leadpush.users.models import ROLES, ApiToken, User
from leadpush.users.sessions import alive, end_sessions
from leadpush.users.tokens import SHOWN_CHARS, TOKEN_PREFIX, hash_token, new_token

__all__ = ["TOKEN_PREFIX", "hash_token"]  # re-exported: callers know tokens through this module
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


def users_in_hand(session: Session, ids: Collection[int | None]) -> dict[int, User]:
    """`users_by_id`, without a statement for the users this session already holds (its identity map: the
    objects any query of this session would hand back for those rows)."""
    wanted = {i for i in ids if i is not None and is_db_id(i)}
    found: dict[int, User] = {}
    for uid in wanted:
        held = session.identity_map.get(session.identity_key(User, uid))
        if isinstance(held, User):
            found[uid] = held
    missing = wanted - found.keys()
    if missing:
        found.update(users_by_id(session, missing))
    return found


def get_assignee(session: Session, user_id: int) -> User:
    """The user a lead is to go to, or a 404 naming the id."""
    user = get_user(session, user_id)
    if user is None:
        raise ApiError(404, "user_not_found", f"用户 {user_id} 不存在")
    return user


def issue_token(session: Session, user: User, name: str | None = None) -> str:
    """A new API token (for a system: no expiry) of the user; returned once, stored only as a hash."""
    return issue_api_token(session, user, name)[0]


def issue_api_token(session: Session, user: User, name: str | None = None) -> tuple[str, ApiToken]:
    token = new_token(TOKEN_PREFIX)
    row = ApiToken(user_id=user.id, token_hash=hash_token(token), prefix=token[:SHOWN_CHARS], name=name, kind="api")
    session.add(row)
    session.flush()
    return token, row


def find_token(session: Session, token: str, *, now: datetime, settings: Settings) -> tuple[User, ApiToken] | None:
    """The active user a token (API token or live session) signs in, with the token's row."""
    if not token or len(token) > 200:
        return None
    row = session.execute(
        select(User, ApiToken)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == hash_token(token), alive(now, settings))
    ).one_or_none()
    if row is None or not row[0].active:
        return None
    return row[0], row[1]


def authenticate(session: Session, token: str, *, now: datetime, settings: Settings) -> User | None:
    found = find_token(session, token, now=now, settings=settings)
    return found[0] if found is not None else None


def valid_token_hashes(session: Session, hashes: Collection[str], *, now: datetime, settings: Settings) -> set[str]:
    """Which of these token hashes still sign someone in (not revoked or expired, user active), as
    `authenticate`."""
    items = list(hashes)
    valid: set[str] = set()
    for start in range(0, len(items), 500):
        valid.update(
            session.scalars(
                select(ApiToken.token_hash)
                .join(User, User.id == ApiToken.user_id)
                .where(
                    ApiToken.token_hash.in_(items[start : start + 500]),
                    alive(now, settings),
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
    "login_name": ("登录名", 64),
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
        if key == "login_name" and cleaned is not None and re.search(r"\s", cleaned):
            raise ApiError(422, "invalid_login_name", "登录名不能包含空格")
        out[key] = cleaned
    return out


def check_login_name_free(session: Session, login_name: str | None, user_id: int | None = None) -> None:
    if login_name is None:
        return
    owner = session.scalar(select(User.id).where(User.login_name == login_name))
    if owner is not None and owner != user_id:
        raise ApiError(409, "login_name_taken", f"登录名 {login_name} 已被其他用户使用")


def identity_taken(exc: IntegrityError) -> ApiError:
    if "login_name" in str(exc.orig):
        return ApiError(409, "login_name_taken", "该登录名已被其他用户使用")
    return ApiError(409, "identity_taken", "该微信 openid 或企业微信账号已绑定其他用户")


def create_user(
    session: Session,
    *,
    name: str,
    role: str,
    team: str | None = None,
    wechat_openid: str | None = None,
    wecom_userid: str | None = None,
    capacity: int | None = None,
    login_name: str | None = None,
    password: str | None = None,
    now: datetime | None = None,
    create_missing_team: bool = False,
) -> tuple[User, str]:
    """Create a user and their first API token (returned once, stored only as a hash); with a login name and
    a password, the person can also sign in with them.

    The team must exist (422 `team_not_found`) unless `create_missing_team` (the CLI) makes it.
    """
    check_role(role)
    fields = check_fields(
        name=name, team=team, wechat_openid=wechat_openid, wecom_userid=wecom_userid, login_name=login_name
    )
    if not fields["name"]:
        raise ApiError(422, "invalid_name", "姓名不能为空")
    if capacity is not None and capacity < 0:
        raise ApiError(422, "invalid_capacity", "线索上限不能为负数")
    if create_missing_team:
        ensure_team(session, fields["team"])
    else:
        require_team(session, fields["team"])
    if password is not None:
        if fields["login_name"] is None:
            raise ApiError(422, "login_name_required", "设置密码需要同时设置登录名")
        passwords.check_policy(password, fields["login_name"])
    check_login_name_free(session, fields["login_name"])
    user = User(
        role=role,
        **fields,
        capacity=capacity,
        active=True,
    )
    if password is not None:
        user.password_hash = passwords.hash_password(password)
        user.password_changed_at = now or utcnow()
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:
        raise identity_taken(exc) from exc
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
    if "login_name" in changes:
        check_login_name_free(session, changes["login_name"], user_id)
    for key, value in changes.items():
        setattr(user, key, value)
    try:
        session.flush()
    except IntegrityError as exc:
        raise identity_taken(exc) from exc
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


# --- passwords ------------------------------------------------------------------------------------------------


def set_password(
    session: Session, signals: Signals, user: User, new_password: str, now: datetime, *, keep: str | None = None
) -> int:
    """Set the user's password (after the policy check), clear their lockout, and end their sessions but the one
    with token `keep` (their sockets and long polls close once committed). How many sessions ended.

    A new `password_changed_at` also starts new runs of failed sign-ins per client address (users.login)."""
    if user.login_name is None:
        raise ApiError(422, "login_name_required", "请先为该用户设置登录名，再设置密码")
    passwords.check_policy(new_password, user.login_name)
    user.password_hash = passwords.hash_password(new_password)
    user.password_changed_at = now
    user.failed_logins = 0
    user.last_failed_at = None
    user.locked_until = None
    ended = end_sessions(session, user.id, now, keep=keep)
    end_sessions_after_commit(session, signals, user.id)
    return ended


# --- named API tokens -------------------------------------------------------------------------------------------


def list_api_tokens(session: Session, user_id: int) -> list[ApiToken]:
    """The user's API tokens (not sessions), newest first, revoked ones included."""
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.user_id == user_id, ApiToken.kind == "api").order_by(ApiToken.id.desc())
        )
    )


def revoke_api_token(session: Session, signals: Signals, actor: User, token_id: int, now: datetime) -> ApiToken:
    """Revoke one API token: the caller's own, or anyone's for an admin (404 otherwise, not revealing it)."""
    row = session.get(ApiToken, token_id) if is_db_id(token_id) else None
    if row is None or row.kind != "api" or (row.user_id != actor.id and actor.role != "admin"):
        raise ApiError(404, "token_not_found", "令牌不存在")
    if row.revoked_at is None:
        row.revoked_at = now
        end_sessions_after_commit(session, signals, row.user_id)
    return row


def check_token_name(name: str) -> str:
    cleaned = clean_text(name) or ""
    if not cleaned:
        raise ApiError(422, "invalid_name", "令牌名称不能为空")
    try:
        return single_line(cleaned, "令牌名称")
    except ValueError as exc:
        raise ApiError(422, "validation_error", str(exc)) from exc
