"""Wake-ups after commit: hints that new deliveries or notifications exist (the ledger is truth), and
that a user's sign-in changed (tokens revoked, user deactivated: their sockets must re-check).

One hook runs inside a transaction instead: `acked`, when a client acks (or reads) notifications, so
another capability can record what the ack means to it (leadpush.sla: the owner opened the lead) in
the same transaction, without notify knowing that capability.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

Listener = Callable[[set[int]], None]
# (session, user id, the notification ids acked — None = all of theirs —, now), in the acking transaction.
AckListener = Callable[[Session, int, Sequence[int] | None, datetime], None]


class Signals:
    """In-process fan-out of "something was committed for these users".

    Listeners must be quick and must not raise; a lost wake-up only delays work until the next poll.
    """

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._auth_listeners: list[Listener] = []
        self._ack_listeners: list[AckListener] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def subscribe_auth(self, listener: Listener) -> None:
        with self._lock:
            self._auth_listeners.append(listener)

    def unsubscribe_auth(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._auth_listeners:
                self._auth_listeners.remove(listener)

    def subscribe_acks(self, listener: AckListener) -> None:
        with self._lock:
            if listener not in self._ack_listeners:
                self._ack_listeners.append(listener)

    def unsubscribe_acks(self, listener: AckListener) -> None:
        with self._lock:
            if listener in self._ack_listeners:
                self._ack_listeners.remove(listener)

    def acked(self, session: Session, user_id: int, ids: Sequence[int] | None, now: datetime) -> None:
        """A client acked these notifications of `user_id` (in the acking transaction; errors roll it back)."""
        with self._lock:
            listeners = list(self._ack_listeners)
        for listener in listeners:
            listener(session, user_id, ids, now)

    def notifications_committed(self, recipient_ids: set[int]) -> None:
        with self._lock:
            listeners = list(self._listeners)
        _call(listeners, recipient_ids)

    def auth_changed(self, user_ids: set[int]) -> None:
        """Tokens of these users were revoked or the users deactivated (committed)."""
        with self._lock:
            listeners = list(self._auth_listeners)
        _call(listeners, user_ids)


def _call(listeners: list[Listener], user_ids: set[int]) -> None:
    for listener in listeners:
        try:
            listener(user_ids)
        except Exception:  # a broken listener must not break the request that committed
            log.exception("wake-up listener failed")
