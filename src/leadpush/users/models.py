"""Users, roles, teams, their sign-in credentials and their hashed tokens (API tokens and sessions)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from leadpush.clock import utcnow
from leadpush.db import Base, UTCDateTime

ROLES = ("admin", "manager", "sales")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    team: Mapped[str | None] = mapped_column(String(64), index=True)
    wechat_openid: Mapped[str | None] = mapped_column(String(128), unique=True)
    wecom_userid: Mapped[str | None] = mapped_column(String(64), unique=True)
    capacity: Mapped[int | None] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Password sign-in: a login name (a phone or work number) and an argon2 hash (pwdlib); both optional.
    login_name: Mapped[str | None] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Failed password sign-ins from anywhere, in a run each within the lockout window of the one before;
    # enough of them lock the account until `locked_until` (see users.login).
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def has_password(self) -> bool:
        return self.password_hash is not None


TOKEN_KINDS = ("api", "session")
SESSION_VIA = ("password", "wecom", "miniprogram", "token")


class ApiToken(Base):
    """A bearer token: a named API token for a system (`kind = 'api'`, no expiry) or a person's session
    (`kind = 'session'`, expiring after idle and absolute limits; see users.sessions)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # First characters of the token, so an admin can tell tokens apart without seeing them.
    prefix: Mapped[str] = mapped_column(String(12))
    name: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(16), default="api", server_default="api")
    # Sessions: how the person signed in, from which client address, and when the session ends at the latest.
    via: Mapped[str | None] = mapped_column(String(16))
    client: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Written at most once a minute per token (see users.sessions.TouchThrottle), not on every request.
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
