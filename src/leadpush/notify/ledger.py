"""Writing notifications and their per-channel delivery rows inside the caller's transaction."""

from __future__ import annotations

import weakref
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Integer, String, cast, func, null, select, text, union_all
from sqlalchemy.orm import Session

from leadpush.config import Settings
from leadpush.db import after_commit, before_commit
from leadpush.notify.models import Delivery, Notification
from leadpush.notify.policy import ChannelPlan, plan_deliveries
from leadpush.notify.preferences import choices_of, chosen_for
from leadpush.notify.service import push_message
from leadpush.notify.signals import Signals
from leadpush.users.models import User

INACTIVE = "收件人已停用，不推送"


@dataclass
class NewNotification:
    recipient: User
    kind: str
    title: str
    body: str
    payload: dict[str, Any]
    dedupe_key: str
    actor_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def about_own_action(self) -> bool:
        return self.actor_id is not None and self.actor_id == self.recipient.id


LOCK_RECIPIENTS = text(
    "SELECT count(pg_advisory_xact_lock(7301, r)) FROM"
    " (SELECT r FROM unnest(CAST(:ids AS integer[])) AS r ORDER BY r) AS ordered"
)
PENDING = "ledger_pending"  # session.info key: what `write_notifications` prepared, written before commit
# The deliveries written with each notification object still in hand (see `planned_deliveries`).
_PLANNED: weakref.WeakKeyDictionary[Notification, list[Delivery]] = weakref.WeakKeyDictionary()


def lock_recipients(session: Session, recipient_ids: Collection[int]) -> None:
    """On PostgreSQL, serialise notification inserts per recipient until commit.

    Ids come from a sequence, so two transactions could commit a recipient's ids out of order and a
    client resuming `after=<id>` would skip one. Holding a per-recipient transaction lock while
    inserting makes each recipient's ids rise in commit order. Locks are taken in id order (no deadlock),
    in one statement. SQLite needs nothing: its writers are already serialised.
    """
    if not recipient_ids or session.get_bind().dialect.name != "postgresql":
        return
    session.execute(LOCK_RECIPIENTS, {"ids": sorted(recipient_ids)})


@dataclass
class Prepared:
    """One notification `write_notifications` prepared, its planned deliveries, and the list it was returned in."""

    note: Notification
    deliveries: list[Delivery]
    returned: list[Notification]
    signals: Signals


def write_notifications(
    session: Session, settings: Settings, signals: Signals, items: list[NewNotification], now: datetime
) -> list[Notification]:
    """Notifications (skipping dedupe keys already present) and one delivery per channel, written with the
    caller's transaction: as its last step, just before `Database.write` commits it.

    Here they are only prepared, in memory (the recipients' channel choices are read now): nothing is
    locked and no row exists yet, so the rest of the transaction holds up nobody else's notifications.
    The before-commit step then, with nothing in between, locks the recipients (PostgreSQL, in id order),
    drops the dedupe keys already stored or prepared earlier in this transaction, reads the recipients'
    latest ids, inserts the notifications (each pointing back at its recipient's previous one) and their
    deliveries, and has the commit signalled.

    The returned Notification objects get their ids at that step: until the block commits their `id` and
    `prev_id` are None, and none of their rows can be read in the transaction. After it, the returned
    list holds exactly the notifications written (a dropped duplicate is taken out of it), with their ids.
    """
    if not items:
        return []
    pending: list[Prepared] | None = session.info.get(PENDING)
    if pending is None:
        pending = session.info[PENDING] = []
        before_commit(session, lambda: write_prepared(session))
    choices = choices_of(session, {i.recipient.id for i in items})  # one query for every recipient's choices
    created: list[Notification] = []
    for item in items:
        note = Notification(
            recipient_id=item.recipient.id,
            kind=item.kind,
            title=item.title,
            body=item.body,
            payload=item.payload,
            dedupe_key=item.dedupe_key,
            created_at=now,
            prev_id=None,
            # A notice about the recipient's own action (a claim, a manager taking a lead themselves) is
            # kept in their history but is no news to them: it is born read, so no badge and no toast.
            read_at=now if item.about_own_action else None,
        )
        deliveries = [
            Delivery(
                recipient_id=item.recipient.id,
                channel=plan.channel,
                status=plan.status,
                policy=plan.reason,
                next_attempt_at=now if plan.status == "pending" else None,
                created_at=now,
                updated_at=now,
            )
            for plan in channel_plans(settings, item, chosen_for(settings, choices.get(item.recipient.id), item.kind))
        ]
        pending.append(Prepared(note, deliveries, created, signals))
        created.append(note)
    return created


def planned_deliveries(note: Notification) -> list[Delivery] | None:
    """The delivery rows written with `note` (as objects, the ones inserted), or None if this process did not
    write it: what an answer built from the objects in hand can read instead of the ledger."""
    return _PLANNED.get(note)


def write_prepared(session: Session) -> None:
    """The before-commit step: write what `write_notifications` prepared in this transaction (see there).

    A caller that must read or change the rows inside the transaction may call it itself, earlier: the rows
    are written then, and the recipients stay locked from there to the commit (what the step avoids).
    """
    pending: list[Prepared] = session.info.pop(PENDING, [])
    if not pending:
        return
    lock_recipients(session, {p.note.recipient_id for p in pending})
    taken, last_id = stored_keys_and_latest_ids(
        session, {p.note.dedupe_key for p in pending}, {p.note.recipient_id for p in pending}
    )
    fresh: list[Prepared] = []
    for p in pending:
        if p.note.dedupe_key in taken:
            p.returned.remove(p.note)
            continue
        taken.add(p.note.dedupe_key)
        fresh.append(p)
    if not fresh:
        return
    # One INSERT per round: a recipient's k-th notification of this transaction goes in round k, so it can
    # point back at the id its k-1-th got (an assignment's two notices, to two people, are one round).
    rounds: list[list[Notification]] = []
    nth: dict[int, int] = {}
    for p in fresh:
        k = nth[p.note.recipient_id] = nth.get(p.note.recipient_id, -1) + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(p.note)
    for notes in rounds:
        for note in notes:
            note.prev_id = last_id.get(note.recipient_id)
        session.add_all(notes)
        session.flush()
        last_id.update((note.recipient_id, note.id) for note in notes)
    for p in fresh:
        for delivery in p.deliveries:
            delivery.notification_id = p.note.id
        session.add_all(p.deliveries)
        _PLANNED[p.note] = p.deliveries
    session.flush()
    by_signals: dict[int, tuple[Signals, set[int], list[Notification]]] = {}
    for p in fresh:
        _, recipients, notes = by_signals.setdefault(id(p.signals), (p.signals, set(), []))
        recipients.add(p.note.recipient_id)
        notes.append(p.note)
    for signals, recipients, notes in by_signals.values():
        # After the commit, the notifications as pushed go with the hint: sockets need no ledger read.
        after_commit(session, partial(signals.notifications_committed, recipients, partial(_as_pushed, notes)))


def _as_pushed(notes: list[Notification]) -> list[tuple[int, dict[str, Any]]]:
    return [(n.recipient_id, push_message(n)) for n in sorted(notes, key=lambda n: n.id)]


def channel_plans(
    settings: Settings, item: NewNotification, chosen: Collection[str] | None = None
) -> list[ChannelPlan]:
    """The policy's plan as the recipient's `chosen` channels shape it; for a deactivated recipient every
    channel is skipped.

    They have left: nothing reaches them (their sockets and long polls are ended too). The notification
    stays in their history and the skipped rows show why, as for any channel the policy does not use.
    """
    plans = plan_deliveries(settings, item.kind, item.recipient, item.actor_id, chosen)
    if item.recipient.active:
        return plans
    return [ChannelPlan(p.channel, "skipped", INACTIVE) if p.status == "pending" else p for p in plans]


def stored_keys_and_latest_ids(
    session: Session, keys: Collection[str], recipient_ids: Collection[int]
) -> tuple[set[str], dict[int, int]]:
    """Which of these dedupe keys are stored, and each recipient's latest notification id: one statement
    (it runs while the recipients are locked, so one round trip fewer there)."""
    latest = (
        select(Notification.recipient_id, func.max(Notification.id), cast(null(), String))
        .where(Notification.recipient_id.in_(sorted(recipient_ids)))
        .group_by(Notification.recipient_id)
    )
    stored = select(cast(null(), Integer), cast(null(), Integer), Notification.dedupe_key).where(
        Notification.dedupe_key.in_(sorted(keys))
    )
    taken: set[str] = set()
    last_id: dict[int, int] = {}
    for rid, mid, key in session.execute(union_all(latest, stored)):
        if key is None:
            last_id[rid] = mid
        else:
            taken.add(key)
    return taken, last_id


def unread_count(session: Session, user_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Notification)
            .where(Notification.recipient_id == user_id, Notification.read_at.is_(None))
        )
        or 0
    )
