"""Platform access tokens (WeChat, WeCom): fetched once, shared across processes, refreshed early.

A token lives in this process's memory and in a shared store (Redis when LEADPUSH_REDIS_URL is set,
the `kv` table otherwise), so every process uses the same one. Fetching is single-flight: an asyncio
lock within a process and a short lock in the shared store across processes, so fifty sends that
all find the token expired cause one fetch. A token the platform rejected (40001/40014/42001) is
passed back as `stale`: the cache then never hands it out again and fetches past the shared copy.

Tokens and secrets are never logged; a logging filter also scrubs them from httpx's request lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx
from anyio import to_thread
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from leadpush.clock import Clock
from leadpush.db import Database
from leadpush.notify.channels.base import SendResult
from leadpush.notify.models import KeyValue

log = logging.getLogger(__name__)

TOKEN_ERRORS = frozenset({40001, 40014, 42001})
LOCK_TTL = 15.0  # seconds a cross-process fetch lock is held at most
LOCK_WAIT = 10.0  # after this long waiting for another fetcher, fetch anyway


# --------------------------------------------------------------------------------------
# Keeping secrets out of logs
# --------------------------------------------------------------------------------------

from leadpush.logredact import RedactSecrets, install_log_redaction, redact  # noqa: E402,F401

# --------------------------------------------------------------------------------------
# Calling the platform
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiReply:
    """What a platform call came back with: a JSON body, or why there is none (always transient)."""

    data: dict[str, Any] | None = None
    failure: str | None = None

    @property
    def errcode(self) -> int | None:
        if self.data is None:
            return None
        code = self.data.get("errcode", 0)
        try:
            return int(code)
        except (TypeError, ValueError):
            return -1

    @property
    def errmsg(self) -> str:
        return str((self.data or {}).get("errmsg", ""))


def short_errmsg(errmsg: str) -> str:
    """The platform's message without its request id / hint suffix."""
    return re.split(r"\s+(?:rid:|hint:)", errmsg, maxsplit=1)[0].strip()[:120]


async def call_platform(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    params: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
) -> ApiReply:
    """One HTTP call; the body goes out as raw UTF-8 JSON (WeCom rejects \\uXXXX escapes with 40033)."""
    content = json.dumps(body, ensure_ascii=False).encode() if body is not None else None
    headers = {"Content-Type": "application/json; charset=utf-8"} if content is not None else None
    try:
        response = await client.request(method, url, params=params, content=content, headers=headers)
    except httpx.TimeoutException:
        return ApiReply(failure="接口超时")
    except httpx.HTTPError as exc:
        return ApiReply(failure=f"连接失败：{type(exc).__name__}")
    if response.status_code >= 400:
        return ApiReply(failure=f"接口返回 HTTP {response.status_code}")
    try:
        data = response.json()
    except ValueError:
        return ApiReply(failure="接口返回的不是 JSON")
    if not isinstance(data, dict):
        return ApiReply(failure="接口返回的不是 JSON 对象")
    return ApiReply(data=data)


# --------------------------------------------------------------------------------------
# The shared store
# --------------------------------------------------------------------------------------


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


class SharedStore(Protocol):
    async def read(self, key: str) -> str | None: ...

    async def write(self, key: str, value: str, expires_at: datetime) -> None: ...

    async def acquire(self, key: str, holder: str, ttl: float) -> bool: ...

    async def release(self, key: str, holder: str) -> None: ...

    async def aclose(self) -> None: ...


class DbStore:
    """The `kv` table: values with an expiry, and locks as rows held until released or expired."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def read(self, key: str) -> str | None:
        return await to_thread.run_sync(self._read, key)

    def _read(self, key: str) -> str | None:
        with self.db.read() as session:
            row = session.get(KeyValue, key)
            if row is None or (row.expires_at is not None and row.expires_at <= self.clock.now()):
                return None
            return row.value

    async def write(self, key: str, value: str, expires_at: datetime) -> None:
        await to_thread.run_sync(self._write, key, value, expires_at)

    def _write(self, key: str, value: str, expires_at: datetime) -> None:
        for _ in range(3):
            try:
                with self.db.write() as session:
                    row = session.get(KeyValue, key, with_for_update=self.db.is_postgres)
                    if row is None:
                        session.add(KeyValue(key=key, value=value, expires_at=expires_at))
                    else:
                        row.value, row.expires_at = value, expires_at
                return
            except IntegrityError:
                continue  # another process inserted it first; update theirs

    async def acquire(self, key: str, holder: str, ttl: float) -> bool:
        return await to_thread.run_sync(self._acquire, key, holder, ttl)

    def _acquire(self, key: str, holder: str, ttl: float) -> bool:
        now = self.clock.now()
        until = now + timedelta(seconds=ttl)
        try:
            with self.db.write() as session:
                taken = session.execute(
                    update(KeyValue)
                    .where(KeyValue.key == key, KeyValue.expires_at <= now)
                    .values(value=holder, expires_at=until)
                    .execution_options(synchronize_session=False)
                )
                if taken.rowcount == 1:
                    return True
                if session.scalar(select(KeyValue.key).where(KeyValue.key == key)) is not None:
                    return False
                session.add(KeyValue(key=key, value=holder, expires_at=until))
            return True
        except IntegrityError:
            return False

    async def release(self, key: str, holder: str) -> None:
        await to_thread.run_sync(self._release, key, holder)

    def _release(self, key: str, holder: str) -> None:
        with self.db.write() as session:
            session.execute(delete(KeyValue).where(KeyValue.key == key, KeyValue.value == holder))

    async def aclose(self) -> None:
        return None


_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class RedisStore:
    """Redis: values with a TTL, locks with SET NX PX released only by their holder."""

    def __init__(self, url: str, clock: Clock, prefix: str = "leadpush:") -> None:
        import redis.asyncio as redis

        # Bounded, so a hung Redis fails a token read instead of holding a send forever.
        self.redis = redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self.clock = clock
        self.prefix = prefix

    async def read(self, key: str) -> str | None:
        raw = await self.redis.get(self.prefix + key)
        return raw.decode() if isinstance(raw, bytes) else raw

    async def write(self, key: str, value: str, expires_at: datetime) -> None:
        ttl = max(1, int((expires_at - self.clock.now()).total_seconds()))
        await self.redis.set(self.prefix + key, value, ex=ttl)

    async def acquire(self, key: str, holder: str, ttl: float) -> bool:
        return bool(await self.redis.set(self.prefix + key, holder, nx=True, px=int(ttl * 1000)))

    async def release(self, key: str, holder: str) -> None:
        await self.redis.eval(_RELEASE, 1, self.prefix + key, holder)

    async def aclose(self) -> None:
        await self.redis.aclose()


# --------------------------------------------------------------------------------------
# The token cache
# --------------------------------------------------------------------------------------


class TokenUnavailable(Exception):
    """The token endpoint failed; `permanent` when it is a configuration problem (bad appid/secret)."""

    def __init__(self, detail: str, permanent: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.permanent = permanent


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


def token_failure(reply: ApiReply, what: str) -> TokenUnavailable:
    """Map a failed token call: transport trouble and -1/45009 are transient, the rest is configuration."""
    if reply.data is None:
        return TokenUnavailable(f"获取{what} access_token 失败：{reply.failure}", permanent=False)
    code = reply.errcode
    detail = f"获取{what} access_token 失败：errcode {code} {short_errmsg(reply.errmsg)}"
    return TokenUnavailable(detail, permanent=code not in (-1, 45009, 45011))


def wechat_fetcher(client: httpx.AsyncClient, base: str, appid: str, secret: str, mode: str = "stable") -> Fetch:
    async def fetch(force: bool) -> tuple[str, int]:
        if mode == "legacy":
            reply = await call_platform(
                client,
                "GET",
                f"{base}/cgi-bin/token",
                params={"grant_type": "client_credential", "appid": appid, "secret": secret},
            )
        else:
            reply = await call_platform(
                client,
                "POST",
                f"{base}/cgi-bin/stable_token",
                body={"grant_type": "client_credential", "appid": appid, "secret": secret, "force_refresh": force},
            )
        if reply.data is None or reply.errcode or not reply.data.get("access_token"):
            raise token_failure(reply, "微信")
        return str(reply.data["access_token"]), int(reply.data.get("expires_in") or 7200)

    return fetch


def wecom_fetcher(client: httpx.AsyncClient, base: str, corpid: str, secret: str) -> Fetch:
    async def fetch(_force: bool) -> tuple[str, int]:
        reply = await call_platform(
            client, "GET", f"{base}/cgi-bin/gettoken", params={"corpid": corpid, "corpsecret": secret}
        )
        if reply.data is None or reply.errcode or not reply.data.get("access_token"):
            raise token_failure(reply, "企业微信")
        return str(reply.data["access_token"]), int(reply.data.get("expires_in") or 7200)

    return fetch


def make_store(redis_url: str | None, db: Database, clock: Clock, redis_prefix: str = "leadpush") -> SharedStore:
    return RedisStore(redis_url, clock, f"{redis_prefix}:") if redis_url else DbStore(db, clock)


NO_TIME_LEFT = "未发送：本次投递的租约所剩时间不足，稍后重试"


def unlimited() -> float:
    return math.inf


async def call_with_token(
    cache: TokenCache,
    do: Callable[[str], Awaitable[ApiReply]],
    time_left: Callable[[], float] = unlimited,
    step: float = 0.0,
) -> ApiReply:
    """Call with the cached token; on a token error fetch a fresh one and call once more.

    Nothing outside may cut this short: once a call is on the wire only its answer says whether the
    platform took the message. So the steps bound themselves instead. `time_left()` is how long this
    delivery's lease still runs and `step` how long one call may take (its HTTP timeout and a margin):
    a call is only started while it can be answered within the lease, and waiting for a token (which
    sends nothing) is cut where the call after it would no longer fit.
    """
    token = await _token_within(cache, None, time_left, step)
    if time_left() < step:
        return ApiReply(failure=NO_TIME_LEFT)
    reply = await do(token)
    if reply.errcode in TOKEN_ERRORS:
        token = await _token_within(cache, token, time_left, step)
        if time_left() < step:
            return ApiReply(failure=NO_TIME_LEFT)
        reply = await do(token)
    return reply


async def _token_within(cache: TokenCache, stale: str | None, time_left: Callable[[], float], step: float) -> str:
    budget = time_left() - step
    if budget <= 0:
        raise TokenUnavailable(NO_TIME_LEFT, permanent=False)
    try:
        async with asyncio.timeout(None if math.isinf(budget) else budget):
            return await cache.get(stale=stale)
    except TimeoutError:
        raise TokenUnavailable("获取 access_token 超时，稍后重试", permanent=False) from None


def retry_for(platform: str, code: int | None, errmsg: str) -> SendResult:
    """What is left once a channel has sorted out its permanent errcodes: every other answer retries."""
    if code in TOKEN_ERRORS:
        return SendResult.retry(f"access_token 无效（{code}），刷新后仍失败")
    if code == -1:
        return SendResult.retry(f"{platform}系统繁忙（-1）")
    return SendResult.retry(f"{platform}返回 errcode {code}：{short_errmsg(errmsg)}")
