"""Fixed-window rate limits for sign-in and token endpoints: in-process, or shared through Redis."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from leadpush.errors import ApiError

log = logging.getLogger(__name__)

# A rate limit is worth a few milliseconds of a request, never more: Redis gets this long to answer,
# and after a failure it is skipped (counting locally) for BREAKER_SECONDS before being tried again.
REDIS_TIMEOUT = 0.1
BREAKER_SECONDS = 30.0


class RateLimiter:
    """Counts hits per (bucket, key) in windows of `window` seconds.

    With Redis the count is shared by every process (INCR + EXPIRE); without it each process counts
    alone, which is exact for the embedded single-process deployment. A slow or unreachable Redis trips
    a circuit breaker: the limiter counts locally for a while instead of making requests wait on it.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        prefix: str = "leadpush",
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._now = now
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, int], int] = {}
        # Runs of failures (count, when the run expires) and locks (until when), kept locally without Redis.
        self._runs: dict[tuple[str, str], tuple[int, float]] = {}
        self._locks: dict[tuple[str, str], float] = {}
        self._prefix = prefix
        self._redis = None
        self._redis_skipped_until = 0.0
        if redis_url:
            import redis

            self._redis = redis.Redis.from_url(
                redis_url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT
            )

    def _window(self, window: int) -> int:
        return int(self._now() // window)

    def _shared(self) -> Any:
        """Redis, unless it failed less than BREAKER_SECONDS ago."""
        if self._redis is None or self._monotonic() < self._redis_skipped_until:
            return None
        return self._redis

    def _redis_failed(self, exc: Exception) -> None:
        if self._monotonic() >= self._redis_skipped_until:
            log.warning("限流计数暂不使用 Redis（%s），%d 秒内在本进程计数", type(exc).__name__, BREAKER_SECONDS)
        self._redis_skipped_until = self._monotonic() + BREAKER_SECONDS

    def count(self, bucket: str, key: str, window: int = 60) -> int:
        slot = self._window(window)
        shared = self._shared()
        if shared is not None:
            try:
                value = shared.get(f"{self._prefix}:rl:{bucket}:{key}:{slot}")
                return int(value or 0)
            except Exception as exc:  # noqa: BLE001 - fall back to counting locally while Redis is away
                self._redis_failed(exc)
        with self._lock:
            return self._counts.get((bucket, key, slot), 0)

    def hit(self, bucket: str, key: str, window: int = 60) -> int:
        slot = self._window(window)
        shared = self._shared()
        if shared is not None:
            name = f"{self._prefix}:rl:{bucket}:{key}:{slot}"
            try:
                pipe = shared.pipeline()
                pipe.incr(name)
                pipe.expire(name, window * 2)
                return int(pipe.execute()[0])
            except Exception as exc:  # noqa: BLE001
                self._redis_failed(exc)
        with self._lock:
            if len(self._counts) > 10_000:  # drop old windows
                self._counts = {k: v for k, v in self._counts.items() if k[2] >= slot}
            value = self._counts.get((bucket, key, slot), 0) + 1
            self._counts[(bucket, key, slot)] = value
            return value

    def check(self, bucket: str, key: str, limit: int, window: int = 60) -> None:
        """Count this attempt; refuse with 429 once `limit` attempts were made in the window."""
        if limit <= 0:
            return
        if self.hit(bucket, key, window) > limit:
            raise ApiError(429, "too_many_requests", "请求过于频繁，请稍后再试")

    def refuse_if_over(self, bucket: str, key: str, limit: int, window: int = 60) -> None:
        """Refuse with 429 when `limit` was already reached (without counting this attempt)."""
        if limit > 0 and self.count(bucket, key, window) >= limit:
            raise ApiError(429, "too_many_requests", "失败次数过多，请一分钟后再试")

    # --- runs of failures and locks (sign-in lockouts) -------------------------------------------------------

    def strike(self, bucket: str, key: str, window: int) -> int:
        """Count one more failure in the run of failures for `key`; the run ends `window` seconds after its first
        failure. Returns the failures in the current run."""
        shared = self._shared()
        if shared is not None:
            name = f"{self._prefix}:run:{bucket}:{key}"
            try:
                pipe = shared.pipeline()
                pipe.set(name, 0, ex=window, nx=True)
                pipe.incr(name)  # INCR keeps the expiry the first failure set
                return int(pipe.execute()[1])
            except Exception as exc:  # noqa: BLE001
                self._redis_failed(exc)
        now = self._now()
        with self._lock:
            if len(self._runs) > 10_000:
                self._runs = {k: v for k, v in self._runs.items() if v[1] > now}
            count, ends = self._runs.get((bucket, key), (0, 0.0))
            if ends <= now:
                count, ends = 0, now + window
            self._runs[(bucket, key)] = (count + 1, ends)
            return count + 1

    def forget(self, bucket: str, key: str) -> None:
        """End the run of failures for `key` (a success)."""
        shared = self._shared()
        if shared is not None:
            try:
                shared.delete(f"{self._prefix}:run:{bucket}:{key}")
            except Exception as exc:  # noqa: BLE001
                self._redis_failed(exc)
        with self._lock:
            self._runs.pop((bucket, key), None)

    def lock(self, bucket: str, key: str, seconds: int) -> None:
        """Lock `key` for `seconds` (and start a fresh run of failures for afterwards)."""
        shared = self._shared()
        if shared is not None:
            try:
                pipe = shared.pipeline()
                pipe.set(f"{self._prefix}:lock:{bucket}:{key}", 1, ex=seconds)
                pipe.delete(f"{self._prefix}:run:{bucket}:{key}")
                pipe.execute()
            except Exception as exc:  # noqa: BLE001
                self._redis_failed(exc)
        now = self._now()
        with self._lock:
            if len(self._locks) > 10_000:
                self._locks = {k: v for k, v in self._locks.items() if v > now}
            self._locks[(bucket, key)] = now + seconds
            self._runs.pop((bucket, key), None)

    def locked_for(self, bucket: str, key: str) -> int:
        """Seconds (rounded up) until `key`'s lock ends; 0 when it is not locked."""
        shared = self._shared()
        if shared is not None:
            try:
                ttl = int(shared.ttl(f"{self._prefix}:lock:{bucket}:{key}"))
                return max(ttl, 0)
            except Exception as exc:  # noqa: BLE001
                self._redis_failed(exc)
        with self._lock:
            until = self._locks.get((bucket, key), 0.0)
        left = until - self._now()
        return int(-(-left // 1)) if left > 0 else 0
