"""Redis buses as two processes would have them: for tests of what crosses Redis between processes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from leadpush.notify.bus import RedisBus
from support.databases import REDIS_URL


def bus_pair() -> tuple[RedisBus, RedisBus]:
    """A sender and a receiver on a prefix of their own (no other test's messages reach them)."""
    prefix = f"lp-test-{uuid.uuid4().hex[:8]}"
    return RedisBus(REDIS_URL, prefix), RedisBus(REDIS_URL, prefix)


@asynccontextmanager
async def running(*buses: RedisBus) -> AsyncIterator[None]:
    """Start the buses (their handlers registered: a bus subscribes to wake-ups only if it has someone to wake)
    and wait until each has subscribed; stop them after. What a connect fires — a resync and a wake-up of
    everyone — has fired when this yields: the listener fires them in the step that sets `connected`."""
    for bus in buses:
        await bus.start()
    try:
        for bus in buses:
            await asyncio.wait_for(bus.connected.wait(), 10)
        yield
    finally:
        for bus in buses:
            await bus.stop()


async def until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait until `predicate()` holds or `timeout` passes (the caller's assertions then say what arrived)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate() and loop.time() < deadline:
        await asyncio.sleep(0.02)
