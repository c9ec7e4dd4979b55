"""This process's live in-app listeners: WebSocket connections and long-poll waiters, per user.

A message from the bus is offered to each listener of its user. A WebSocket connection sends it
directly when it follows the last one it sent (`prevId`), and otherwise re-reads the gap from the
ledger, so every client sees each of its notifications once, in id order.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from typing import Any, Protocol


class Listener(Protocol):
    def offer(self, message: dict[str, Any] | None) -> None:
        """Called on the event loop; None means "you may have missed something: re-read"."""


class Hub:
    def __init__(self) -> None:
        self._listeners: dict[int, set[Listener]] = defaultdict(set)
        self._lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None

    def register(self, user_id: int, listener: Listener) -> None:
        with self._lock:
            self._listeners[user_id].add(listener)

    def unregister(self, user_id: int, listener: Listener) -> None:
        with self._lock:
            listeners = self._listeners.get(user_id)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self._listeners[user_id]

    def deliver(self, user_id: int, message: dict[str, Any] | None) -> None:
        with self._lock:
            listeners = list(self._listeners.get(user_id, ()))
        for listener in listeners:
            listener.offer(message)

    def resync(self) -> None:
        """Ask every listener to re-read from the ledger (after a bus reconnect)."""
        with self._lock:
            everyone = [(uid, list(ls)) for uid, ls in self._listeners.items()]
        for _uid, listeners in everyone:
            for listener in listeners:
                listener.offer(None)

    def count(self) -> int:
        with self._lock:
            return sum(len(ls) for ls in self._listeners.values())


class Waiter:
    """A long-poll request waiting for its user's next message."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def offer(self, message: dict[str, Any] | None) -> None:
        self.event.set()
