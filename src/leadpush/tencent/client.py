"""Calling the WeChat / WeCom API: one HTTP call and its errcode, and a call with a cached access token."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from leadpush.tencent.errcodes import TOKEN_ERRORS, TRANSIENT_TOKEN_ERRORS, short_errmsg
from leadpush.tencent.tokens import TokenCache, TokenUnavailable

NO_TIME_LEFT = "未发送：本次投递的租约所剩时间不足，稍后重试"


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


def issued_token(reply: ApiReply, what: str) -> tuple[str, int]:
    """(access_token, expires_in) from a token endpoint's reply, or TokenUnavailable saying why not.

    Transport trouble and the transient errcodes pass by themselves; the rest is configuration.
    """
    if reply.data is not None and not reply.errcode and reply.data.get("access_token"):
        return str(reply.data["access_token"]), int(reply.data.get("expires_in") or 7200)
    if reply.data is None:
        raise TokenUnavailable(f"获取{what} access_token 失败：{reply.failure}", permanent=False)
    code = reply.errcode
    detail = f"获取{what} access_token 失败：errcode {code} {short_errmsg(reply.errmsg)}"
    raise TokenUnavailable(detail, permanent=code not in TRANSIENT_TOKEN_ERRORS, errcode=code)


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
