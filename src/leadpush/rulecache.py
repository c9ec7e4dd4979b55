"""Per-process copies of what every ownership change reads and almost never changes: the enabled transfer rules,
the enabled SLA rules, and the recipients' channel choices (notification preferences).

Rules change a few times a year, a person's channel choices a few times ever, and every assignment read them
(the choices of both people it tells), so each process keeps a copy:

- **In this process, at once.** A listener on the engine sees every statement that writes `transfer_rules`,
  `sla_rules`, `notification_preferences` or `teams` (a team rename changes the rules' team through ON UPDATE
  CASCADE) — through the API,
  a bulk statement, raw SQL, a migration — and drops the copies when it runs and again when its connection
  goes back to the pool (after the commit), so no copy read before that commit survives it.
- **In other processes, within LEADPUSH_RULE_CACHE_SECONDS** (default 2 s; 0 = no copies, every read goes to
  the database): a copy is used for at most that long. A rule saved on one api process applies to assignments
  on another (a changed channel choice: the notices written there) at most that much later; the deadlines of leads assigned in between are set again by the
  recompute every rule change starts after its response (transfer rules), or stand as set (an SLA ladder).

Copies are transient objects, never attached to a session: callers only read them. Loads happen inside the
caller's write transaction (SQLite: under the write lock; PostgreSQL: read committed), so a load never sees
rules older than the last local invalidation. A process whose Database was not registered (`install`)
reads the rules every time.
"""

from __future__ import annotations

import re
import threading
import time
import weakref
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

from sqlalchemy import Engine, inspect
from sqlalchemy.orm import Session
from sqlalchemy.pool import Pool

from leadpush.db import on_writes_to

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

WATCHED = re.compile(r"\b(transfer_rules|sla_rules|notification_preferences|teams)\b", re.IGNORECASE)
_TOUCHED = "leadpush.rules_touched"


class RuleCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[object, tuple[float, Any]] = {}
        self._generation = 0
        self.loads = 0  # how many times a copy was (re)loaded: for tests and benchmarks

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()

    def get(self, key: str, load: Callable[[], list[T]]) -> list[T]:
        if self.ttl <= 0:
            return load()
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            generation = self._generation
        if entry is not None and entry[0] > now:
            return entry[1]
        value = load()
        with self._lock:
            self.loads += 1
            # Not kept if the rules changed here while loading: the next read loads again.
            if self._generation == generation:
                self._entries[key] = (now + self.ttl, value)
        return value

    def get_many(self, prefix: str, keys: Collection[K], load: Callable[[set[K]], dict[K, V]]) -> dict[K, V | None]:
        """Per key (None: `load` found nothing for it); `load` is called once, with the keys not held."""
        now = time.monotonic()
        out: dict[K, V | None] = {}
        missing: set[K] = set()
        with self._lock:
            generation = self._generation
            for key in keys:
                entry = self._entries.get((prefix, key)) if self.ttl > 0 else None
                if entry is not None and entry[0] > now:
                    out[key] = entry[1]
                else:
                    missing.add(key)
        if missing:
            found = load(missing)
            with self._lock:
                self.loads += 1
                keep = self.ttl > 0 and self._generation == generation
                for key in missing:
                    out[key] = found.get(key)
                    if keep:
                        self._entries[(prefix, key)] = (now + self.ttl, out[key])
        return out


_CACHES: weakref.WeakKeyDictionary[Pool, RuleCache] = weakref.WeakKeyDictionary()


def install(engines: Sequence[Engine], ttl: float) -> RuleCache:
    """Keep rule copies for the sessions of these engines (a database's `engines`: one cache for all; and of
    engines sharing their pools)."""
    existing = _CACHES.get(engines[0].pool)
    if existing is not None:
        existing.ttl = ttl
        return existing
    cache = RuleCache(ttl)
    for engine in engines:
        _CACHES[engine.pool] = cache
        on_writes_to(engine, WATCHED, cache.invalidate, _TOUCHED)
    return cache


def cache_of(session: Session) -> RuleCache | None:
    return _CACHES.get(session.get_bind().engine.pool)


def copies(rows: list[T]) -> list[T]:
    """Transient copies of loaded rows (every column attribute), safe to share between threads and sessions."""
    out: list[T] = []
    for row in rows:
        mapper = inspect(type(row))
        out.append(type(row)(**{attr.key: getattr(row, attr.key) for attr in mapper.column_attrs}))
    return out


def cached(session: Session, key: str, load: Callable[[], list[T]]) -> list[T]:
    """`load()` (rows of `session`), or this process's recent copy of its result."""
    cache = cache_of(session)
    if cache is None:
        return load()
    return cache.get(key, lambda: copies(load()))


def cached_many(
    session: Session, prefix: str, keys: Collection[K], load: Callable[[set[K]], dict[K, V]]
) -> dict[K, V | None]:
    """`load(keys)` per key, or this process's recent copy of each; values are shared: callers only read them."""
    cache = cache_of(session)
    if cache is None:
        found = load(set(keys))
        return {key: found.get(key) for key in keys}
    return cache.get_many(prefix, keys, load)
