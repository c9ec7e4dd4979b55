"""Platform access tokens (WeChat, WeCom): fetched once, shared across processes, refreshed early.

A token lives in this process's memory and in a shared store (Redis when LEADPUSH_REDIS_URL is set,
the `kv` table otherwise; see store.py), so every process uses the same one. Fetching is single-flight:
an asyncio lock within a process and a short lock in the shared store across processes, so fifty sends
that all find the token expired cause one fetch. A token the platform rejected (40001/40014/42001) is
passed back as `stale`: the cache then never hands it out again and fetches past the shared copy.

Getting past a rejected token is rationed, because the platform rations it. With `stable_token` a
normal call returns the same token while it is valid, so only `force_refresh:true` replaces it, and
WeChat allows that at most 20 times a day and 30 s apart. With the legacy `/cgi-bin/token` every call
issues a new token and kills the previous one about 5 minutes later, so a fetch past a rejected token
kills the token every other server holds. So the deployment (every process sharing the store) makes at
most one such refresh per 30 s, and at most 20 forced refreshes a day (WeChat's day, Beijing time),
counted in the shared store under the fetch lock. Beyond, the normal fetch is all there is: when it
hands back the rejected token, the send fails as retryable with the reason, and this process does not
ask again until the next refresh is allowed (the shared copy is still read: another process may have
a new token by then).

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
from datetime import datetime, timedelta, timezone

from leadpush.clock import Clock
from leadpush.context import AppContext
from leadpush.logredact import install_log_redaction
from leadpush.notify.channels.base import SendResult
from leadpush.tencent.store import SharedStore, make_store

log = logging.getLogger(__name__)

LOCK_TTL = 15.0  # seconds a cross-process fetch lock is held at most
LOCK_WAIT = 10.0  # after this long waiting for another fetcher, fetch anyway
FORCE_INTERVAL = 30.0  # seconds at least between two refreshes past a rejected token (WeChat: 30 s)
FORCE_DAILY_LIMIT = 20  # force_refresh:true a day (WeChat: 20; the 21st answers 45009)
PLATFORM_TZ = timezone(timedelta(hours=8))  # WeChat's daily limits reset at midnight Beijing time
PLATFORM_REFUSALS = frozenset({45009, 45011})  # a day's quota used up / too frequent


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
    """The token endpoint failed; `permanent` when it is a configuration problem (bad appid/secret).

    `errcode` is the token endpoint's answer, when it gave one.
    """

    def __init__(self, detail: str, permanent: bool, errcode: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.permanent = permanent
        self.errcode = errcode

    def as_result(self) -> SendResult:
        """What a send that could not get a token amounts to: nothing was sent."""
        return SendResult.permanent(self.detail) if self.permanent else SendResult.retry(self.detail)


# fetch(force_refresh) -> (token, expires_in seconds)
Fetch = Callable[[bool], Awaitable[tuple[str, int]]]


@dataclass(frozen=True)
class ForceRecord:
    """The deployment's refreshes past a rejected token: when the last was, and forced ones today."""

    day: str  # WeChat's day (Beijing time) the count is for
    count: int  # force_refresh:true calls made that day
    last: datetime | None  # the last refresh past a rejected token (forced, or a legacy fetch)

    def dumps(self) -> str:
        last = None if self.last is None else self.last.isoformat()
        return json.dumps({"day": self.day, "count": self.count, "last": last})

    @classmethod
    def loads(cls, raw: str | bytes | None, day: str) -> ForceRecord:
        """The stored record, its count restarted when `day` is a new day (nothing stored: a blank one)."""
        try:
            d = json.loads(raw) if raw else {}
            last = datetime.fromisoformat(d["last"]) if d.get("last") else None
            return cls(day, int(d.get("count", 0)) if d.get("day") == day else 0, last)
        except (ValueError, KeyError, TypeError):
            return cls(day, 0, None)


def platform_day(now: datetime) -> str:
    return now.astimezone(PLATFORM_TZ).date().isoformat()


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
        issues_new: bool = False,
        force_interval: float = FORCE_INTERVAL,
        force_daily_limit: int = FORCE_DAILY_LIMIT,
    ) -> None:
        self.key = f"token:{key}"
        self.lock_key = f"token-lock:{key}"
        self.force_key = f"token-force:{key}"
        # Every fetch issues a new token and dooms the previous one (WeChat's legacy /cgi-bin/token).
        self.issues_new = issues_new
        self.force_interval = force_interval
        self.force_daily_limit = force_daily_limit
        # A rejected token this process may not get past yet: (token, until, why). Until then a caller
        # passing it as stale gets TokenUnavailable(why) without asking the platform again.
        self._denied: tuple[str, datetime, str] | None = None
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
            self._check_denied(stale)
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

    def _check_denied(self, stale: str | None) -> None:
        denied = self._denied
        if denied is None or stale is None or denied[0] != stale:
            return
        if self.clock.now() < denied[1]:
            raise TokenUnavailable(denied[2], permanent=False)
        self._denied = None

    async def _may_refresh_past(self, stale: str, forced: bool) -> ForceRecord:
        """The shared record when a refresh past `stale` is allowed now; else TokenUnavailable saying why.

        Called under the fetch lock, so the read-check-write of the record is the deployment's only one.
        """
        now = self.clock.now()
        record = ForceRecord.loads(await self.store.read(self.force_key), platform_day(now))
        why, until = None, None
        if record.last is not None and (now - record.last).total_seconds() < self.force_interval:
            until = record.last + timedelta(seconds=self.force_interval)
            if forced:
                why = (
                    f"access_token 被微信拒绝，但距上次强制刷新不足 {self.force_interval:g} 秒"
                    "（微信限制：强制刷新每天最多 20 次、至少间隔 30 秒），稍后重试"
                )
            else:
                why = (
                    f"access_token 被微信拒绝，但距上次重新获取不足 {self.force_interval:g} 秒"
                    "（旧版接口每次获取都会让其他服务器手中的 token 约 5 分钟后失效），稍后重试"
                )
        elif forced and record.count >= self.force_daily_limit:
            local = now.astimezone(PLATFORM_TZ)
            until = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
            why = (
                f"access_token 被微信拒绝，普通获取仍是同一 token；今日强制刷新已达 {self.force_daily_limit} 次"
                f"（微信每日上限），北京时间零点后恢复，稍后重试"
            )
        if why is not None and until is not None:
            self._denied = (stale, until, why)
            log.warning("%s（%s）", why, self.key)
            raise TokenUnavailable(why, permanent=False)
        return record

    async def _note_refresh_past(self, record: ForceRecord, forced: bool) -> None:
        now = self.clock.now()
        done = ForceRecord(record.day, record.count + (1 if forced else 0), now)
        await self.store.write(self.force_key, done.dumps(), now + timedelta(days=2))

    async def _refresh(self, stale: str | None) -> str:
        if stale is not None and self.issues_new:
            # Legacy endpoint: this fetch issues a new token and dooms the one every other server holds.
            await self._note_refresh_past(await self._may_refresh_past(stale, forced=False), forced=False)
        self.fetches += 1
        token, expires_in = await self.fetch(False)
        if stale is not None and token == stale and self.supports_force:
            # The platform still hands out the token it just refused: make it issue a new one, if allowed.
            record = await self._may_refresh_past(stale, forced=True)
            await self._note_refresh_past(record, forced=True)  # counted before the call: never one too many
            self.fetches += 1
            try:
                token, expires_in = await self.fetch(True)
            except TokenUnavailable as exc:
                if exc.errcode not in PLATFORM_REFUSALS:
                    raise
                await self._platform_refused(stale, record, exc.errcode)
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

    async def _platform_refused(self, stale: str, record: ForceRecord, errcode: int | None) -> None:
        """WeChat refused the force_refresh (someone else forced too): believe it, and say so."""
        now = self.clock.now()
        if errcode == 45009:  # the day's 20 are gone: no more forcing today, in any process
            record = ForceRecord(record.day, max(record.count + 1, self.force_daily_limit), record.last)
        else:  # 45011: too soon after another force; the record's `last` (now) spaces the next one
            record = ForceRecord(record.day, record.count + 1, now)
        await self.store.write(self.force_key, record.dumps(), now + timedelta(days=2))
        await self._may_refresh_past(stale, forced=True)  # raises, with the reason, and remembers it
        raise TokenUnavailable(f"微信拒绝强制刷新 access_token（{errcode}），稍后重试", permanent=False)


def shared_token_cache(
    ctx: AppContext, key: str, fetch: Fetch, supports_force: bool, issues_new: bool = False
) -> TokenCache:
    """The deployment's cache for one app's token, kept in its shared store (Redis or the `kv` table).

    `supports_force`: the endpoint has force_refresh (WeChat's stable_token); `issues_new`: every fetch
    issues a new token and dooms the previous one (WeChat's legacy /cgi-bin/token).
    """
    s = ctx.settings
    store = make_store(s.redis_url, ctx.db, ctx.clock, s.redis_prefix)
    return TokenCache(
        key, fetch, store, ctx.clock, s.token_refresh_margin, supports_force=supports_force, issues_new=issues_new
    )
