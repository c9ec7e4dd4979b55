"""Wake-ups after commit: hints that new deliveries or notifications exist (the ledger is truth), and
that a user's sign-in changed (tokens revoked, user deactivated: their sockets must re-check).

One hook runs inside a transaction instead: `acked`, when a client acks (or reads) notifications, so
another capability can record what the ack means to it (leadpush.sla: the owner opened the lead) in
the same transaction, without notify knowing that capability.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wake:
    """Whom a commit gives something to do: the workers (`deliveries`: it wrote deliveries a worker must send
    — other channels, or in-app rows not written sent), the schedulers (`deadlines`: it wrote a stored moment
    they wake for — a transfer deadline or warning, a first-contact step, a follow-up reminder —, the earliest
    of them `earliest`; None: not known, re-read). The default wakes both, re-reading: when in doubt, wake."""

    deliveries: bool = True
    deadlines: bool = True
    earliest: datetime | None = None

    def __or__(self, other: Wake) -> Wake:
        """Both commits' needs (one loop tick's commits share one wake-up)."""
        if not self.deadlines:
            earliest = other.earliest
        elif not other.deadlines:
            earliest = self.earliest
        elif self.earliest is None or other.earliest is None:
            earliest = None
        else:
            earliest = min(self.earliest, other.earliest)
        return Wake(self.deliveries or other.deliveries, self.deadlines or other.deadlines, earliest)

    @property
    def anyone(self) -> bool:
        return self.deliveries or self.deadlines


EVERYONE = Wake()
NOBODY = Wake(deliveries=False, deadlines=False)
_DEADLINES = "signals_earliest_deadline"  # session.info key: the earliest stored moment the transaction wrote


def deadlines_written(session: Session, moments: Iterable[datetime | None]) -> None:
    """Note, in the writing transaction, stored moments the scheduler wakes for (None: none): its commit's
    wake-up carries the earliest, and a scheduler re-reads only if that is before its own next wake-up.
    Every writer of such a moment in a transaction that writes notifications calls it (transfer deadlines,
    first-contact steps, follow-up reminders); a transaction that changes them otherwise wakes the scheduler
    with `Wake(deadlines=True)` (not known: re-read)."""
    known = [m if m.tzinfo is not None else m.replace(tzinfo=UTC) for m in moments if m is not None]
    if not known:
        return
    held: datetime | None = session.info.get(_DEADLINES)
    first = min(known)
    session.info[_DEADLINES] = first if held is None else min(held, first)


def deadline_wake(session: Session, deliveries: bool) -> Wake:
    """The wake-up of a commit of `session`'s transaction: workers if `deliveries`, schedulers if it noted
    deadlines (`deadlines_written`)."""
    earliest: datetime | None = session.info.get(_DEADLINES)
    return Wake(deliveries=deliveries, deadlines=earliest is not None, earliest=earliest)


Listener = Callable[[set[int]], None]
# (recipient id, the notification as pushed) for what a commit wrote; built only if someone listens.
Pushed = Sequence[tuple[int, dict[str, Any]]]
# (recipient ids, what the commit wrote for them as pushed — empty when the commit only changed state, how
# many in-app deliveries it wrote as sent: see `Signals.pushes_inapp` —, and whom it gives work: `Wake`).
CommitListener = Callable[[set[int], Pushed, int, Wake], None]
# (session, user id, the notification ids acked — None = all of theirs —, now), in the acking transaction.
AckListener = Callable[[Session, int, Sequence[int] | None, datetime], None]


class Signals:
    """In-process fan-out of "something was committed for these users".

    Listeners must be quick and must not raise; a lost wake-up only delays work until the next poll.
    """

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._commit_listeners: list[CommitListener] = []
        self._auth_listeners: list[Listener] = []
        self._ack_listeners: list[AckListener] = []
        self._pushers: list[CommitListener] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def subscribe_commits(self, listener: CommitListener, *, pushes_inapp: bool = False) -> None:
        """Like `subscribe`, and also given the notifications the commit wrote, as pushed.

        `pushes_inapp`: the listener hands them to their recipients' in-app listeners (this process's sockets,
        and the other api processes' through the bus) — what the in-app channel would do. While such a listener
        is subscribed, the in-app deliveries of what this process commits are written as sent (ledger.py).
        """
        with self._lock:
            self._commit_listeners.append(listener)
            if pushes_inapp:
                self._pushers.append(listener)

    def unsubscribe_commits(self, listener: CommitListener) -> None:
        with self._lock:
            if listener in self._commit_listeners:
                self._commit_listeners.remove(listener)
            if listener in self._pushers:
                self._pushers.remove(listener)

    @property
    def pushes_inapp(self) -> bool:
        """Whether a commit here is pushed to its recipients' in-app listeners by a subscribed listener."""
        return bool(self._pushers)

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

    def notifications_committed(
        self,
        recipient_ids: set[int],
        pushed: Callable[[], Pushed] | None = None,
        inapp_sent: int = 0,
        wake: Wake = EVERYONE,
    ) -> None:
        """`pushed`: builds what the commit wrote as pushed (called once, only if a listener wants it);
        `inapp_sent`: how many in-app deliveries the commit wrote as sent (for the pushers to count); `wake`:
        which background roles the commit gives work (the default: all, re-reading everything)."""
        with self._lock:
            listeners = list(self._listeners)
            commit_listeners = list(self._commit_listeners)
        _call(listeners, recipient_ids)
        if not commit_listeners:
            return
        try:
            messages = pushed() if pushed is not None else ()
        except Exception:  # the listeners fall back to a re-read hint
            log.exception("building the pushed notifications failed")
            messages = ()
        for listener in commit_listeners:
            try:
                listener(recipient_ids, messages, inapp_sent, wake)
            except Exception:  # a broken listener must not break the request that committed
                log.exception("wake-up listener failed")

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
