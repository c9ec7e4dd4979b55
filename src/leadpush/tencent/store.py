"""Where cached access tokens are shared across processes: Redis when configured, else the `kv` table.

Both hold values with an expiry and short locks released only by their holder, so one process
fetches a token while the others wait for it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from anyio import to_thread
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from leadpush.clock import Clock
from leadpush.db import Database, rows_changed
from leadpush.notify.models import KeyValue


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
                if rows_changed(taken) == 1:
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


def make_store(redis_url: str | None, db: Database, clock: Clock, redis_prefix: str = "leadpush") -> SharedStore:
    return RedisStore(redis_url, clock, f"{redis_prefix}:") if redis_url else DbStore(db, clock)
