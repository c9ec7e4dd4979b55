"""Password sign-in, with lockouts that stop guessing without locking a whole office out.

Failed sign-ins are counted three ways:
- per account and client address: PAIR_LIMIT failures in a run (each within LOCK_WINDOW of the run's first)
  lock that account on that address for LOCK_WINDOW; the same person elsewhere, and colleagues behind the same
  office NAT, are not affected;
- per account from anywhere: ACCOUNT_LIMIT failures, each within LOCK_WINDOW of the one before, lock the account
  for LOCK_WINDOW (stored in `users.locked_until`, shown to admins as `lockedUntil`, cleared by a password reset
  or when it runs out);
- per client address across accounts: the API's limit on failed sign-ins per address and minute
  (LEADPUSH_AUTH_FAILURES_PER_MINUTE, behind LEADPUSH_TRUSTED_PROXIES the real client's address).

An unknown login name answers exactly like a wrong password, takes the same time (the password is checked
against a dummy hash) and is locked out the same way, so answers never tell which login names exist.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from leadpush.context import AppContext
from leadpush.errors import ApiError
from leadpush.users import passwords
from leadpush.users.models import User
from leadpush.users.sessions import session_ends, start_session

PAIR_LIMIT = 5
ACCOUNT_LIMIT = 20
LOCK_WINDOW = timedelta(minutes=15)
LOCK_SECONDS = int(LOCK_WINDOW.total_seconds())


@dataclass
class SignedIn:
    user: User
    token: str
    expires_at: datetime


def locked(code: str, seconds: float, message: str) -> ApiError:
    seconds = max(1, math.ceil(seconds))
    minutes = max(1, math.ceil(seconds / 60))
    return ApiError(429, code, message.format(minutes=minutes), headers={"Retry-After": str(seconds)})


def pair_key(login_name: str, user: User | None, address: str) -> str:
    """The lockout key of an account on a client address. A password change or reset starts new runs (its time
    is part of the key), so it also lifts the locks of every address at once."""
    stamp = user.password_changed_at.isoformat() if user is not None and user.password_changed_at else ""
    digest = hashlib.sha256(f"{login_name}\n{stamp}".encode()).hexdigest()[:24]
    return f"{digest}:{address}"


def name_key(login_name: str) -> str:
    return hashlib.sha256(login_name.encode()).hexdigest()[:24]


def refuse_if_locked(ctx: AppContext, login_name: str, user: User | None, address: str, now: datetime) -> None:
    per_address = ctx.settings.auth_failures_per_minute
    if per_address > 0 and ctx.limiter.count("auth-fail", address) >= per_address:
        raise locked("too_many_attempts", 60, "此网络登录失败次数过多，请 {minutes} 分钟后再试")
    wait = ctx.limiter.locked_for("login-pair", pair_key(login_name, user, address))
    if wait > 0:
        raise locked("too_many_attempts", wait, "登录失败次数过多，请 {minutes} 分钟后再试")
    if user is not None and user.locked_until is not None and user.locked_until > now:
        raise locked("account_locked", (user.locked_until - now).total_seconds(), ACCOUNT_LOCKED)
    if user is None:
        wait = ctx.limiter.locked_for("login-name", name_key(login_name))
        if wait > 0:
            raise locked("account_locked", wait, ACCOUNT_LOCKED)


ACCOUNT_LOCKED = "该账号登录失败次数过多，已被锁定，请 {minutes} 分钟后再试或联系管理员重置密码"


def record_failure(ctx: AppContext, login_name: str, user: User | None, address: str, now: datetime) -> None:
    """Count a failed sign-in three ways; raise the lockout it causes, if any."""
    ctx.limiter.hit("auth-fail", address)
    key = pair_key(login_name, user, address)
    pair_lock = ctx.limiter.strike("login-pair", key, LOCK_SECONDS) >= PAIR_LIMIT
    if pair_lock:
        ctx.limiter.lock("login-pair", key, LOCK_SECONDS)
    account_lock = False
    if user is not None:
        with ctx.db.write() as session:
            row = session.get(User, user.id)
            if row is not None:
                recent = row.last_failed_at is not None and now - row.last_failed_at < LOCK_WINDOW
                row.failed_logins = (row.failed_logins if recent else 0) + 1
                row.last_failed_at = now
                if row.failed_logins >= ACCOUNT_LIMIT:
                    row.locked_until = now + LOCK_WINDOW
                    row.failed_logins = 0
                    account_lock = True
    elif ctx.limiter.strike("login-name", name_key(login_name), LOCK_SECONDS) >= ACCOUNT_LIMIT:
        ctx.limiter.lock("login-name", name_key(login_name), LOCK_SECONDS)
        account_lock = True
    if account_lock:
        raise locked("account_locked", LOCK_SECONDS, ACCOUNT_LOCKED)
    if pair_lock:
        raise locked("too_many_attempts", LOCK_SECONDS, "登录失败次数过多，请 {minutes} 分钟后再试")


def password_sign_in(ctx: AppContext, login_name: str, password: str, address: str) -> SignedIn:
    """Check a login name and password and start a session (401 / 403 / 429 otherwise)."""
    login_name = login_name.strip()
    now = ctx.clock.now()
    with ctx.db.read() as session:
        user = session.scalar(select(User).where(User.login_name == login_name)) if login_name else None
    refuse_if_locked(ctx, login_name, user, address, now)
    matches, rehashed = passwords.verify_password(password, user.password_hash if user is not None else None)
    if user is None or not matches:
        record_failure(ctx, login_name, user, address, now)
        raise ApiError(401, "invalid_credentials", "登录名或密码错误")
    if not user.active:
        raise ApiError(403, "user_inactive", "该账号已停用，请联系管理员")
    ctx.limiter.forget("login-pair", pair_key(login_name, user, address))
    with ctx.db.write() as session:
        row = session.get(User, user.id)
        if row is None:  # deleted meanwhile
            raise ApiError(401, "invalid_credentials", "登录名或密码错误")
        row.failed_logins = 0
        row.last_failed_at = None
        row.locked_until = None
        if rehashed is not None:
            row.password_hash = rehashed
        token = start_session(session, row, via="password", now=now, settings=ctx.settings, client=address)
    return SignedIn(row, token, session_ends(now, ctx.settings))
