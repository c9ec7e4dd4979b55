"""Platform access tokens (WeChat, WeCom): fetched once, shared across processes, refreshed early.

A token lives in this process's memory and in a shared store (Redis when LEADPUSH_REDIS_URL is set,
the `kv` table otherwise; see store.py), so every process uses the same one. Fetching is single-flight:
an asyncio lock within a process and a short lock in the shared store across processes, so fifty sends
that all find the token expired cause one fetch. A token the platform rejected (40001/40014/42001) is
passed back as `stale`: the cache then never hands it out again and fetches past the shared copy.

Tokens and secrets are never logged; a logging filter also scrubs them from httpx's request lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from leadpush.clock import Clock
from leadpush.context import AppContext
from leadpush.logredact import install_log_redaction
from leadpush.notify.channels.base import SendResult
from leadpush.tencent.store import SharedStore, make_store

log = logging.getLogger(__name__)

LOCK_TTL = 15.0  # seconds a cross-process fetch lock is held at most
LOCK_WAIT = 10.0  # after this long waiting for another fetcher, fetch anyway


@dataclass(frozen=True)
class CachedToken:
    token: str
    refresh_at: datetime  # hand it out until then; afterwards fetch (the platform overlaps old and new)
    expires_at: datetime

    def dumps(self) -> str:
        return json.dumps(
            {"token": self.token, "refreshAt": self.refresh_at.isoformat(), "expiresAt": self.expires_at.isoformat()}
        )

    @classmethod
    def loads(cls, raw: str | bytes | None) -> CachedToken | None:
        if not raw:
            return None
        try:
            d = json.loads(raw)
            return cls(d["token"], datetime.fromisoformat(d["refreshAt"]), datetime.fromisoformat(d["expiresAt"]))
        except (ValueError, KeyError, TypeError):
            return None


class TokenUnavailable(Exception):
    """The token endpoint failed; `permanent` when it is a configuration problem (bad appid/secret)."""

    def __init__(self, detail: str, permanent: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.permanent = permanent

    def as_result(self) -> SendResult:
        """What a send that could not get a token amounts to: nothing was sent."""
        return SendResult.permanent(self.detail) if self.permanent else SendResult.retry(self.detail)


# fetch(force_refresh) -> (token, expires_in seconds)
Fetch = Callable[[bool], Awaitable[tuple[str, int]]]


class TokenCache:
    """One access token (one app or one corp), single-flight across coroutines and processes."""

    def __init__(
        self,
        key: str,
        fetch: Fetch,
        store: SharedStore,
        clock: Clock,
        margin: float = 300.0,
        supports_force: bool = True,
    ) -> None:
        self.key = f"token:{key}"
        self.lock_key = f"token-lock:{key}"
        self.fetch = fetch
        self.store = store
        self.clock = clock
        self.margin = margin
        self.supports_force = supports_force
        self._memory: CachedToken | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0  # how many times this process asked the platform (tests, metrics)
        install_log_redaction()

    def _usable(self, cached: CachedToken | None, stale: str | None) -> str | None:
        if cached is None or cached.token == stale or self.clock.now() >= cached.refresh_at:
            return None
        return cached.token

    async def get(self, stale: str | None = None) -> str:
        """A valid token; pass the one the platform just rejected as `stale` to get a different one."""
        if token := self._usable(self._memory, stale):
            return token
        async with self._lock:
            if token := self._usable(self._memory, stale):
                return token
            if token := await self._from_store(stale):
                return token
            holder = uuid.uuid4().hex
            deadline = time.monotonic() + LOCK_WAIT
            locked = await self.store.acquire(self.lock_key, holder, LOCK_TTL)
            while not locked:
                await asyncio.sleep(0.05)
                if token := await self._from_store(stale):
                    return token
                if time.monotonic() > deadline:
                    log.warning("等待其他进程刷新 access token 超时，自行刷新（%s）", self.key)
                    break
                locked = await self.store.acquire(self.lock_key, holder, LOCK_TTL)
            try:
                if token := await self._from_store(stale):
                    return token
                return await self._refresh(stale)
            finally:
                if locked:
                    await self.store.release(self.lock_key, holder)

    async def _from_store(self, stale: str | None) -> str | None:
        cached = CachedToken.loads(await self.store.read(self.key))
        token = self._usable(cached, stale)
        if token:
            self._memory = cached
        return token

    async def _refresh(self, stale: str | None) -> str:
        self.fetches += 1
        token, expires_in = await self.fetch(False)
        if stale is not None and token == stale and self.supports_force:
            # The platform still hands out the token it just refused: make it issue a new one.
            self.fetches += 1
            token, expires_in = await self.fetch(True)
        now = self.clock.now()
        expires_in = max(1, int(expires_in))
        cached = CachedToken(
            token,
            refresh_at=now + timedelta(seconds=expires_in - min(self.margin, expires_in / 2)),
            expires_at=now + timedelta(seconds=expires_in),
        )
        self._memory = cached
        await self.store.write(self.key, cached.dumps(), cached.expires_at)
        return token


def shared_token_cache(ctx: AppContext, key: str, fetch: Fetch, supports_force: bool) -> TokenCache:
    """The deployment's cache for one app's token, kept in its shared store (Redis or the `kv` table)."""
    s = ctx.settings
    store = make_store(s.redis_url, ctx.db, ctx.clock, s.redis_prefix)
    return TokenCache(key, fetch, store, ctx.clock, s.token_refresh_margin, supports_force=supports_force)
