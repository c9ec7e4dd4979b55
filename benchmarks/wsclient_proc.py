"""The benchmarks' WebSocket listeners in a process of their own (benchmarks.ws_5000 --listener-process).

One asyncio process that both holds thousands of sockets and drives 64 HTTP clients on a 2-core machine
time-stamps every arrival late by its own event-loop lag (measured in a burst: p99 tens to hundreds of ms).
Here the sockets are read by this process alone, which does nothing else, and each notification's arrival
is stamped here with time.perf_counter() (CLOCK_MONOTONIC on Linux: comparable with the driving process's
stamps on the same machine) and written to stdout at once: `{"a": [userId, type, customerId, time]}`.
The driving process (`ProcessListeners`) resolves its futures with these stamps, so its own lag delays
only when it learns of an arrival, not the time recorded.

Commands, one JSON object a line on stdin, each answered by one `{"r": ...}` line:
- {"op": "open", "url": ws_base, "tokens": [...]} → {"users": [userId of each opened socket], "failed": n,
  "seconds": s}
- {"op": "lag", "on": true|false} → {} / {"lags": [seconds, ...]}: this process's loop lag while on
- {"op": "close"} → {"closed_with": [close codes of sockets the server closed]}, then it exits
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from benchmarks.wsclient import Listener

CONNECT_CONCURRENCY = 100


class Reported(dict[Any, float]):
    """A listener's `arrived` (nobody waits here): each arrival is written to stdout as it is stored."""

    def __init__(self, user_id: int) -> None:
        super().__init__()
        self.user_id = user_id

    def __setitem__(self, key: Any, now: float) -> None:
        sys.stdout.write(json.dumps({"a": [self.user_id, *key, now]}) + "\n")
        sys.stdout.flush()


async def open_all(url: str, tokens: list[str], into: list[Listener]) -> int:
    """Open a socket for each token (100 at a time) into `into`; how many failed."""
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    failed = 0

    async def one(token: str) -> None:
        nonlocal failed
        async with sem:
            try:
                listener = await Listener(url, token).open()
            except Exception:  # noqa: BLE001
                failed += 1
                return
            assert listener.hello is not None
            listener.arrived = Reported(listener.hello["data"]["userId"])
            into.append(listener)

    await asyncio.gather(*(one(t) for t in tokens))
    return failed


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    listeners: list[Listener] = []
    lags: list[float] = []
    lag_task: asyncio.Task[None] | None = None

    async def sample_lag() -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - asked - 0.001)

    def answer(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps({"r": obj}) + "\n")
        sys.stdout.flush()

    while line := await reader.readline():
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "open":
            started = time.perf_counter()
            failed = await open_all(cmd["url"], cmd["tokens"], listeners)
            users = [listener.hello["data"]["userId"] for listener in listeners if listener.hello]
            answer({"users": users, "failed": failed, "seconds": time.perf_counter() - started})
        elif op == "lag":
            if cmd["on"]:
                lags.clear()
                lag_task = asyncio.create_task(sample_lag())
                answer({})
            else:
                if lag_task is not None:
                    lag_task.cancel()
                answer({"lags": lags})
        elif op == "close":
            closed = [listener.closed_with for listener in listeners if listener.closed_with is not None]
            await asyncio.gather(*(listener.close() for listener in listeners), return_exceptions=True)
            answer({"closed_with": closed})
            return


if __name__ == "__main__":
    asyncio.run(main())
