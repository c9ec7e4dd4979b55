"""People's sessions: bearer tokens (`lps_…`) in `api_tokens` with `kind = 'session'`, started by a sign-in
(password, WeCom, mini program, or exchanging an API token) and ended by signing out, expiry, a password
change or reset, a deactivation.

A session ends `LEADPUSH_SESSION_IDLE_HOURS` after it was last used and at the latest
`LEADPUSH_SESSION_MAX_HOURS` after it started. Expiry is a condition of every token check (`alive`), so the
periodic re-check of open sockets and long polls (notify.hub) closes those of an expired session too.

"Last used" is written at most once a minute per token and process (`TokenUses`): a write per request would
queue every request behind SQLite's single writer; a minute is nothing against an idle limit of hours.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import ColumnElement, and_, func, or_, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from leadpush.config import Settings
from leadpush.db import Database, rows_changed
from leadpush.users.models import ApiToken, User
from leadpush.users.tokens import SESSION_PREFIX, SHOWN_CHARS, hash_token, new_token

log = logging.getLogger(__name__)

Via = Literal["password", "wecom", "miniprogram", "token"]
USE_RECORDED_EVERY = timedelta(minutes=1)


def idle_limit(settings: Settings) -> timedelta:
    return timedelta(hours=settings.session_idle_hours)


def session_ends(now: datetime, settings: Settings) -> datetime:
    """When a session started at `now` ends at the latest."""
    return now + timedelta(hours=settings.session_max_hours)


def alive(now: datetime, settings: Settings) -> ColumnElement[bool]:
    """The tokens that still sign someone in: not revoked, and for a session, neither past its end nor idle."""
    last_use = func.coalesce(ApiToken.last_used_at, ApiToken.created_at)
    return and_(
        ApiToken.revoked_at.is_(None),
        or_(
            ApiToken.kind != "session",
            and_(ApiToken.expires_at > now, last_use > now - idle_limit(settings)),
        ),
    )


def alive_at(token: ApiToken, now: datetime, settings: Settings) -> bool:
    """`alive` for a row in hand (leadpush.users.authcache checks its copies with it): the same conditions."""
    if token.revoked_at is not None:
        return False
    if token.kind != "session":
        return True
    last_use = token.last_used_at if token.last_used_at is not None else token.created_at
    return (
        token.expires_at is not None
        and token.expires_at > now
        and last_use is not None
        and last_use > now - idle_limit(settings)
    )


def start_session(
    session: Session,
    user: User,
    *,
    via: Via,
    now: datetime,
    settings: Settings,
    client: str | None = None,
) -> str:
    """Start a session for `user` (the caller has checked the user is active); returns its token, which is
    stored only as a hash."""
    token = new_token(SESSION_PREFIX)
    session.add(
        ApiToken(
            user_id=user.id,
            token_hash=hash_token(token),
            prefix=token[:SHOWN_CHARS],
            kind="session",
            via=via,
            client=(client or "")[:64] or None,
            created_at=now,
            last_used_at=now,
            expires_at=session_ends(now, settings),
        )
    )
    session.flush()
    return token


def end_session(session: Session, user_id: int, token: str, now: datetime) -> bool:
    """Sign out: end the session with this token. False when the token is no session of the user."""
    result = session.execute(
        update(ApiToken)
        .where(
            ApiToken.token_hash == hash_token(token),
            ApiToken.user_id == user_id,
            ApiToken.kind == "session",
            ApiToken.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    return rows_changed(result) > 0


def end_sessions(session: Session, user_id: int, now: datetime, *, keep: str | None = None) -> int:
    """End every session of the user (but the one with token `keep`); API tokens stay. How many ended."""
    query = update(ApiToken).where(
        ApiToken.user_id == user_id, ApiToken.kind == "session", ApiToken.revoked_at.is_(None)
    )
    if keep is not None:
        query = query.where(ApiToken.token_hash != hash_token(keep))
    return rows_changed(session.execute(query.values(revoked_at=now)))


class TokenUses:
    """Which tokens this process recorded as used, and when: one write a minute per token at most."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recorded: dict[str, datetime] = {}  # by token hash

    def due(self, token: ApiToken, now: datetime) -> bool:
        """True (once) when the token's use should be written now; the caller then calls `record_use`."""
        stored = token.last_used_at
        with self._lock:
            last = self._recorded.get(token.token_hash)
            if stored is not None and (last is None or stored > last):
                last = stored
            if last is not None and now - last < USE_RECORDED_EVERY:
                return False
            if len(self._recorded) > 10_000:
                self._recorded = {k: v for k, v in self._recorded.items() if now - v < USE_RECORDED_EVERY}
            self._recorded[token.token_hash] = now
            return True

    def record_use(self, db: Database, token: ApiToken, now: datetime) -> None:
        """Write the token's last use; best effort (a busy or unreachable database skips it this time)."""
        try:
            with db.write() as session:
                session.execute(
                    update(ApiToken)
                    .where(
                        ApiToken.id == token.id,
                        or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < now - USE_RECORDED_EVERY),
                    )
                    .values(last_used_at=now)
                )
        except (OperationalError, InterfaceError) as exc:
            log.debug("令牌使用时间暂未记录（%s）", type(exc).__name__)
            with self._lock:
                self._recorded.pop(token.token_hash, None)
