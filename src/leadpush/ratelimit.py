"""Fixed-window rate limits for sign-in and token endpoints: in-process, or shared through Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from leadpush.errors import ApiError


class RateLimiter:
    """Counts hits per (bucket, key) in windows of `window` seconds.

    With Redis the count is shared by every process (INCR + EXPIRE); without it each process counts
    alone, which is exact for the embedded single-process deployment.
    """

    def __init__(self, redis_url: str | None = None, prefix: str = "leadpush", now: Callable[[], float] = time.time):
        self._now = now
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, int], int] = {}
        self._prefix = prefix
        self._redis = None
        if redis_url:
            import redis

            self._redis = redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)

    def _window(self, window: int) -> int:
        return int(self._now() // window)

    def count(self, bucket: str, key: str, window: int = 60) -> int:
        slot = self._window(window)
        if self._redis is not None:
            try:
                value = self._redis.get(f"{self._prefix}:rl:{bucket}:{key}:{slot}")
                return int(value or 0)
            except Exception:  # noqa: BLE001 - fall back to counting locally while Redis is away
                pass
        with self._lock:
            return self._counts.get((bucket, key, slot), 0)

    def hit(self, bucket: str, key: str, window: int = 60) -> int:
        slot = self._window(window)
        if self._redis is not None:
            name = f"{self._prefix}:rl:{bucket}:{key}:{slot}"
            try:
                pipe = self._redis.pipeline()
                pipe.incr(name)
                pipe.expire(name, window * 2)
                return int(pipe.execute()[0])
            except Exception:  # noqa: BLE001
                pass
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
