"""Wake-ups after commit: hints that new deliveries or notifications exist (the ledger is truth)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Listener = Callable[[set[int]], None]


class Signals:
    """In-process fan-out of "something was committed for these users".

    Listeners must be quick and must not raise; a lost wake-up only delays work until the next poll.
    """

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def notifications_committed(self, recipient_ids: set[int]) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(recipient_ids)
            except Exception:  # a broken listener must not break the request that committed
                log.exception("wake-up listener failed")
