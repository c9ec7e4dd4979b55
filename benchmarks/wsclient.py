"""A WebSocket client of leadpush for the benchmarks: resume, then time-stamp every notification."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


class Listener:
    """One `/ws` connection. `expect(key)` returns a future resolved with the perf_counter() time at
    which a notification matching `key` (see `key_of`) arrived."""

    def __init__(self, ws_base: str, token: str, key_of: Callable[[dict[str, Any]], Any] | None = None) -> None:
        self.url = f"{ws_base}/ws?token={token}"
        self.key_of = key_of or customer_key
        self.ws: ClientConnection | None = None
        self.hello: dict[str, Any] | None = None
        self.waiting: dict[Any, asyncio.Future[float]] = {}
        self.arrived: dict[Any, float] = {}
        self.count = 0
        # Set when the server closed the socket while it was being read (its close code; 1006: no code).
        self.closed_with: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self, after: int = 0, compression: str | None = "deflate") -> Listener:
        self.ws = await connect(self.url, open_timeout=60, ping_interval=None, compression=compression, max_size=None)
        self.hello = json.loads(await self.ws.recv())
        await self.ws.send(json.dumps({"type": "resume", "after": after}))
        self._task = asyncio.create_task(self._read())
        return self

    def expect(self, key: Any) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if key in self.arrived:
            fut.set_result(self.arrived.pop(key))
        else:
            self.waiting[key] = fut
        return fut

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                now = time.perf_counter()
                message = json.loads(raw)
                if "id" not in message:
                    continue
                self.count += 1
                key = self.key_of(message)
                fut = self.waiting.pop(key, None)
                if fut is not None and not fut.done():
                    fut.set_result(now)
                elif key is not None:
                    self.arrived[key] = now
        except Exception:  # noqa: BLE001 - a closed socket ends the reader
            pass
        self.closed_with = (self.ws.close_code or 1006) if self.ws.close_code != 1000 else None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.ws is not None:
            await self.ws.close()


def customer_key(message: dict[str, Any]) -> Any:
    """(type, customerId) for single-lead notifications, (type, batchId) for digests."""
    data = message.get("data") or {}
    if "customerId" in data:
        return (message.get("type"), data["customerId"])
    if "batchId" in data:
        return (message.get("type"), data["batchId"])
    return None
