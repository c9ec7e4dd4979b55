"""This process's live in-app listeners: WebSocket connections and long-poll waiters, per user.

A message from the bus is offered to each listener of its user. A WebSocket connection sends it
directly when it follows the last one it sent (`prevId`), and otherwise re-reads the gap from the
ledger, so every client sees each of its notifications once, in id order.

Each listener remembers the hash of the token it signed in with. When a user's tokens are revoked or
the user is deactivated (and periodically, in case that message was lost), the hub re-checks those
hashes in one query and ends the listeners whose token no longer signs in.

Catch-up hints coalesce: a hint ("user n has something new", from a commit here or another api process)
for a user with sockets marks the user stale; one task reads the ledger for every stale user at once (one
read in flight; what is hinted meanwhile goes into the next) and offers each socket its user's messages,
which the socket sends, skips (already sent) or replaces with a re-read of its own (a gap), as for any
message. A burst of 1,000 commits no longer costs 1,000 reads in threads (issue 17).

Heartbeats: one task per process (`beat_periodically`) asks, about once a second, the listeners whose
heartbeat is due, instead of a sleeping task per socket; a socket sends `{"type":"heartbeat"}` every
LEADPUSH_WS_HEARTBEAT_SECONDS after it connected, as before. Each listener's answer says when to ask it
next, and the hub files it under that tick: a tick looks at the few that are due (5,000 sockets at 25 s:
~200 a second), not at every socket (issue 17: the whole scan was ~3% of the loop in a burst profile).
The schedule holds no object per listener of its own (a dict and a set entry): what the gc policy counts
per socket is unchanged, and a closed socket leaves nothing behind in it.

A message's wire text is encoded once per loop tick however many sockets send it (`text_of`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol

from anyio import CapacityLimiter, to_thread

log = logging.getLogger(__name__)

# Given token hashes, the ones that still sign someone in (a database read: runs in a thread).
TokenCheck = Callable[[set[str]], set[str]]
# Given {user id: the id after which to read}, each user's notifications after it, in id order, as pushed
# (a database read: runs in a thread), and the users whose read was cut short (they re-read themselves).
ReadAfter = Callable[[dict[int, int]], tuple[dict[int, list[dict[str, Any]]], set[int]]]


def encode(message: dict[str, Any]) -> str:
    """A message's text on the socket: compact JSON, as starlette's `send_json` writes it."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


# A listener's place in the heartbeat schedule while the hub asks it.
ASKING = -1


class Listener(Protocol):
    token_hash: str
    # A WebSocket lives for hours, a long poll for seconds: the gc policy counts the long-lived only.
    long_lived: bool
    # Follows the ledger by id (a socket): its hints are coalesced into the hub's shared read.
    follows_ledger: bool

    def after(self) -> int | None:
        """The id after which this listener needs what is new; None: not synced yet (it reads itself)."""

    def offer(self, message: dict[str, Any] | None) -> None:
        """Called on the event loop; None means "you may have missed something: re-read"."""

    def end_session(self) -> None:
        """Called on the event loop when the token no longer signs in: close, send nothing more."""

    def heartbeat(self, now: float) -> float | None:
        """Called on the event loop (`now`: time.monotonic()): send one if due. When to ask again (a
        time.monotonic() value; asked at the first tick after it); None: never."""


class Hub:
    def __init__(self, check: TokenCheck, read_after: ReadAfter | None = None) -> None:
        self._check = check
        # None: every listener re-reads for itself on a hint (no coalescing).
        self.read_after = read_after
        self._stale: set[int] = set()
        self._catching_up: asyncio.Task[None] | None = None
        # The shared read's own thread token: it does not queue behind the request handlers' 40.
        self._read_limiter: CapacityLimiter | None = None
        self._listeners: dict[int, set[Listener]] = defaultdict(set)
        self._lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        # Long-lived listeners (sockets) unregistered since the process started (the gc policy's churn).
        self.closed = 0
        # This loop tick's encoded messages: {id(message): (message, text)} (the message kept, so its id
        # is not reused before the memo is cleared at the next tick).
        self._texts: dict[int, tuple[dict[str, Any], str]] = {}
        # Heartbeats: {tick number: the listeners to ask at it}, and each listener's tick number.
        self._beat_tick = 1.0
        self._beats: dict[int, set[Listener]] = {}
        self._beat_of: dict[Listener, int] = {}

    def text_of(self, message: dict[str, Any]) -> str:
        """On the loop: the message's wire text, encoded once for every socket it is offered to in this tick."""
        hit = self._texts.get(id(message))
        if hit is not None and hit[0] is message:
            return hit[1]
        text = encode(message)
        if not self._texts:
            try:
                asyncio.get_running_loop().call_soon(self._texts.clear)
            except RuntimeError:  # not on a loop: nothing to share it with
                return text
        self._texts[id(message)] = (message, text)
        return text

    def try_register(self, user_id: int, listener: Listener, cap: int) -> bool:
        """Register unless the user already has `cap` listeners of the same kind (sockets, long polls)."""
        with self._lock:
            same = sum(1 for other in self._listeners.get(user_id, ()) if type(other) is type(listener))
            if same >= cap:
                return False
            self._listeners[user_id].add(listener)
            self._schedule_beat(listener, 0)  # asked at the next tick: it says when it is due
            return True

    def _schedule_beat(self, listener: Listener, tick: int) -> None:
        """(Under the lock.) Ask `listener` at tick number `tick`."""
        self._beats.setdefault(tick, set()).add(listener)
        self._beat_of[listener] = tick

    def unregister(self, user_id: int, listener: Listener) -> None:
        with self._lock:
            listeners = self._listeners.get(user_id)
            if listeners is not None:
                if listener in listeners:
                    listeners.discard(listener)
                    self.closed += listener.long_lived
                    tick = self._beat_of.pop(listener, None)
                    if tick is not None and tick != ASKING:
                        due = self._beats[tick]
                        due.discard(listener)
                        if not due:
                            del self._beats[tick]
                if not listeners:
                    del self._listeners[user_id]

    def deliver(self, user_id: int, message: dict[str, Any] | None) -> None:
        """On the loop: offer a message (None: a hint, "re-read") to the user's listeners."""
        with self._lock:
            listeners = list(self._listeners.get(user_id, ()))
        coalesce = False
        for listener in listeners:
            if message is None and self.read_after is not None and listener.follows_ledger:
                coalesce = True
            else:
                listener.offer(message)
        if coalesce:
            self._stale.add(user_id)
            if self._catching_up is None:
                self._catching_up = asyncio.get_running_loop().create_task(self._catch_up_stale())

    def resync(self) -> None:
        """Ask every listener to re-read from the ledger (after a bus reconnect)."""
        with self._lock:
            users = list(self._listeners)
        for uid in users:
            self.deliver(uid, None)

    async def _catch_up_stale(self) -> None:
        """The one catch-up task while users are stale: read for all of them, again while more come."""
        try:
            await asyncio.sleep(0)  # the rest of this tick's hints join the first read
            while self._stale:
                users, self._stale = self._stale, set()
                try:
                    await self._catch_up(users)
                except Exception:  # noqa: BLE001 - never drop a hint: each socket re-reads itself
                    log.warning("批量补发失败，各连接自行补读", exc_info=True)
                    with self._lock:
                        listeners = [ls for uid in users for ls in self._listeners.get(uid, ())]
                    for listener in listeners:
                        listener.offer(None)
        finally:
            self._catching_up = None

    async def _catch_up(self, users: set[int]) -> None:
        assert self.read_after is not None
        with self._lock:
            targets = [(uid, ls) for uid in users for ls in self._listeners.get(uid, ()) if ls.follows_ledger]
        afters: dict[int, int] = {}
        waiting: list[tuple[int, Listener]] = []
        for uid, listener in targets:
            after = listener.after()
            if after is None:
                listener.offer(None)  # not synced yet: its own catch-up at sync reads everything
                continue
            afters[uid] = min(after, afters.get(uid, after))
            waiting.append((uid, listener))
        if not afters:
            return
        try:
            if self._read_limiter is None:
                self._read_limiter = CapacityLimiter(1)
            found, cut = await to_thread.run_sync(self.read_after, afters, limiter=self._read_limiter)
        except Exception as exc:  # noqa: BLE001 - each socket re-reads itself (and closes if that fails too)
            log.warning("批量补发读取失败（%s），各连接自行补读", type(exc).__name__)
            found, cut = {}, set(afters)
        for uid, listener in waiting:
            if uid in cut:
                listener.offer(None)
                continue
            for message in found.get(uid, ()):
                listener.offer(message)

    async def stop(self) -> None:
        task = self._catching_up
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def revalidate(self, user_ids: set[int] | None = None) -> int:
        """End the listeners (of these users, or everyone's) whose token no longer signs in; how many."""
        with self._lock:
            targets = [
                (uid, listener)
                for uid, listeners in self._listeners.items()
                if user_ids is None or uid in user_ids
                for listener in listeners
            ]
        if not targets:
            return 0
        valid = await to_thread.run_sync(self._check, {listener.token_hash for _, listener in targets})
        ended = 0
        for uid, listener in targets:
            if listener.token_hash not in valid:
                self.unregister(uid, listener)
                listener.end_session()
                ended += 1
        return ended

    def heartbeat(self) -> None:
        """Give each listener whose time has come its chance to send a heartbeat (on the loop)."""
        now = time.monotonic()
        current = math.floor(now / self._beat_tick)
        with self._lock:
            due = [listener for tick in [t for t in self._beats if t <= current] for listener in self._beats.pop(tick)]
            for listener in due:
                self._beat_of[listener] = ASKING
        again: list[tuple[Listener, int | None]] = []
        for listener in due:
            when = listener.heartbeat(now)
            # The first tick at or after `when` (never this one: it has been asked); None: not again.
            again.append((listener, None if when is None else max(current + 1, math.ceil(when / self._beat_tick))))
        with self._lock:
            for listener, tick in again:
                if self._beat_of.get(listener) != ASKING:
                    continue  # unregistered meanwhile
                if tick is None:
                    del self._beat_of[listener]
                else:
                    self._schedule_beat(listener, tick)

    async def beat_periodically(self, every: float) -> None:
        """The one heartbeat task of this process: looks `every` seconds (at most 1 s) at each listener."""
        tick = self._beat_tick = min(1.0, every / 5)
        while True:
            await asyncio.sleep(tick)
            self.heartbeat()

    def count(self) -> int:
        with self._lock:
            return sum(len(ls) for ls in self._listeners.values())

    def count_long_lived(self) -> int:
        with self._lock:
            return sum(listener.long_lived for ls in self._listeners.values() for listener in ls)


class Waiter:
    """A long-poll request waiting for its user's next message."""

    long_lived = False
    follows_ledger = False

    def __init__(self, token_hash: str) -> None:
        self.token_hash = token_hash
        self.event = asyncio.Event()
        self.ended = False

    def after(self) -> int | None:
        return None

    def offer(self, message: dict[str, Any] | None) -> None:
        self.event.set()

    def end_session(self) -> None:
        self.ended = True
        self.event.set()

    def heartbeat(self, now: float) -> float | None:
        """A long poll answers within its wait; it has no heartbeat."""
        return None
