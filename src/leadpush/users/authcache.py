"""Per-process copies of what a bearer token signs in with (the user and the token's row), so that a request
does not open a read transaction and run a query just to learn who it is (issue 17: ~5% of an assignment's CPU).

The rules are those of `leadpush.rulecache`:

- **In this process, at once.** A listener on the engine sees every statement that writes `users`,
  `api_tokens` or `teams` (a revoke, a deactivation, a role or team change, a session ended, a team renamed
  through ON UPDATE CASCADE) and drops every copy when it runs and again when its connection goes back to
  the pool (after the commit). A revoke answered by this process is refused by this process from then on.
- **In other processes, within LEADPUSH_AUTH_CACHE_SECONDS** (default 1 s; 0 = no copies, every request
  reads the database): a copy is used for at most that long. Sockets and long polls are ended everywhere at
  once as before (the auth signal over Redis); only a plain HTTP request reaching another api process may
  still pass during that second.

A copy is used only while the token is still alive by the clock (`sessions.alive_at`: a session past its
end or idle limit is read again, and refused by the database). Only tokens that signed someone in are
kept; a wrong token always goes to the database (and counts towards the lockout). Each request gets objects
of its own, detached as if loaded by a read session that has closed, as before.
"""

from __future__ import annotations

import re
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, inspect
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.pool import Pool

from leadpush.config import Settings
from leadpush.db import Database, on_writes_to
from leadpush.users.models import ApiToken, User
from leadpush.users.service import find_token
from leadpush.users.sessions import alive_at
from leadpush.users.tokens import hash_token

WATCHED = re.compile(r"\b(users|api_tokens|teams)\b", re.IGNORECASE)
_TOUCHED = "leadpush.auth_touched"
MAX_ENTRIES = 10_000

Snapshot = tuple[dict[str, Any], dict[str, Any]]


class TokenCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Snapshot]] = {}
        self._generation = 0
        self.loads = 0  # how many times a token was read from the database: for tests and benchmarks

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()

    @property
    def generation(self) -> int:
        with self._lock:
            return self._generation

    def get(self, token_hash: str) -> Snapshot | None:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(token_hash)
        if entry is None or entry[0] <= now:
            return None
        return entry[1]

    def put(self, token_hash: str, generation: int, snapshot: Snapshot) -> None:
        """Keep `snapshot`, unless something was invalidated since `generation` was read (before the load)."""
        now = time.monotonic()
        with self._lock:
            self.loads += 1
            if self.ttl <= 0 or self._generation != generation:
                return
            if len(self._entries) >= MAX_ENTRIES:
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
                if len(self._entries) >= MAX_ENTRIES:
                    self._entries.clear()
            self._entries[token_hash] = (now + self.ttl, snapshot)


_CACHES: weakref.WeakKeyDictionary[Pool, TokenCache] = weakref.WeakKeyDictionary()
_INSTALL_LOCK = threading.Lock()


def install(engines: Sequence[Engine], ttl: float) -> TokenCache:
    """The token cache of these engines' pools (a database's `engines`: one cache for all), watching their
    statements from the first call on."""
    with _INSTALL_LOCK:
        existing = _CACHES.get(engines[0].pool)
        if existing is not None:
            existing.ttl = ttl
            return existing
        cache = TokenCache(ttl)
        for engine in engines:
            _CACHES[engine.pool] = cache
    for engine in engines:
        on_writes_to(engine, WATCHED, cache.invalidate, _TOUCHED)
    return cache


def _columns(row: object) -> dict[str, Any]:
    return {attr.key: getattr(row, attr.key) for attr in inspect(type(row)).column_attrs}


def _detached(cls: type[Any], values: dict[str, Any]) -> Any:
    """An instance as a read session that has closed leaves it: built as the ORM loads a row (the values
    straight into its dict, no attribute events, no history to clear), a third of the constructor's CPU on
    the event loop."""
    obj = inspect(cls).class_manager.new_instance()
    obj.__dict__.update(values)
    make_transient_to_detached(obj)
    return obj


def from_copy(db: Database, token: str, *, now: Any, settings: Settings) -> tuple[User, ApiToken] | None:
    """What `token` signs in with from this process's recent copy, or None (no copy, or not alive any more):
    no database, no blocking, so the event loop may ask it without a thread."""
    if not token or len(token) > 200:
        return None
    cache = install(db.engines, settings.auth_cache_seconds)
    if cache.ttl <= 0:
        return None
    snapshot = cache.get(hash_token(token))
    if snapshot is None:
        return None
    user, row = _detached(User, snapshot[0]), _detached(ApiToken, snapshot[1])
    if user.active and alive_at(row, now, settings):
        return user, row
    return None


def signed_in(db: Database, token: str, *, now: Any, settings: Settings) -> tuple[User, ApiToken] | None:
    """`users.service.find_token` in a read transaction of its own, or from this process's recent copy."""
    if not token or len(token) > 200:
        return None
    found = from_copy(db, token, now=now, settings=settings)
    if found is not None:
        return found
    cache = install(db.engines, settings.auth_cache_seconds)
    token_hash = hash_token(token)
    generation = cache.generation
    with db.read() as session:
        found = find_token(session, token, now=now, settings=settings)
    if found is not None:
        cache.put(token_hash, generation, (_columns(found[0]), _columns(found[1])))
    return found
