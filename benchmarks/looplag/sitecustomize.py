"""Measurement only (benchmarks.ws_5000 --server-loop-lag): each leadpush server process's event-loop lag.

Put on a server's PYTHONPATH with BENCH_LOOP_LAG_DIR set, this module (imported by Python at start-up) makes a
`leadpush serve --role ...` process run one more task on its loop: sleep 5 ms, note how late it woke up, again.
A thread writes every sample (time.perf_counter(), lag in seconds, the loop thread's CPU time so far) to BENCH_LOOP_LAG_DIR/lag-<pid>.txt once a
second. The lag is everything that kept the loop from its next turn: its own callbacks, the interpreter lock
(request threads), and waiting for a core; the loop thread's own CPU time tells how much of the time
was its own work. Never used outside the benchmarks.
"""

import os
import sys

_DIR = os.environ.get("BENCH_LOOP_LAG_DIR")

if _DIR and "serve" in sys.argv and "--role" in sys.argv:
    import asyncio
    import threading
    import time

    import uvicorn.server

    EVERY = 0.005
    _samples: list[tuple[float, float, float]] = []
    _keep: list[asyncio.Task[None]] = []

    async def _sample() -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(EVERY)
            now = time.perf_counter()
            _samples.append((now, now - asked - EVERY, time.thread_time()))

    def _dump() -> None:
        path = os.path.join(_DIR, f"lag-{os.getpid()}.txt")
        while True:
            time.sleep(1.0)
            with open(path + ".tmp", "w") as f:
                f.writelines(f"{t:.6f} {lag:.6f} {cpu:.6f}\n" for t, lag, cpu in list(_samples))
            os.replace(path + ".tmp", path)

    _startup = uvicorn.server.Server.startup

    async def _startup_with_probe(self, sockets=None):  # noqa: ANN001, ANN202
        _keep.append(asyncio.get_running_loop().create_task(_sample()))
        threading.Thread(target=_dump, daemon=True).start()
        return await _startup(self, sockets)

    uvicorn.server.Server.startup = _startup_with_probe  # type: ignore[method-assign]
