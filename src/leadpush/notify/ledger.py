"""Writing notifications and their per-channel delivery rows inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from leadpush.config import Settings
from leadpush.db import after_commit
from leadpush.notify.models import Delivery, Notification
from leadpush.notify.policy import ChannelPlan, plan_deliveries
from leadpush.notify.preferences import choices_of, chosen_for
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


def lock_recipients(session: Session, recipient_ids: set[int]) -> None:
    """On PostgreSQL, serialise notification inserts per recipient until commit.

    Ids come from a sequence, so two transactions could commit a recipient's ids out of order and a
    client resuming `after=<id>` would skip one. Holding a per-recipient transaction lock while
    inserting makes each recipient's ids rise in commit order. Locks are taken in id order (no deadlock).
    SQLite needs nothing: its writers are already serialised.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    for rid in sorted(recipient_ids):
        session.execute(text("SELECT pg_advisory_xact_lock(7301, :rid)"), {"rid": rid})


def write_notifications(
    session: Session, settings: Settings, signals: Signals, items: list[NewNotification], now: datetime
) -> list[Notification]:
    """Insert notifications (skipping dedupe keys already present) and one delivery per channel."""
    if not items:
        return []
    keys = [i.dedupe_key for i in items]
    existing = set(session.scalars(select(Notification.dedupe_key).where(Notification.dedupe_key.in_(keys))))
    fresh = [i for i in items if i.dedupe_key not in existing]
    recipients = {i.recipient.id for i in fresh}
    lock_recipients(session, recipients)
    choices = choices_of(session, recipients)  # one query for every fresh recipient's channel choices
    last_id = latest_ids(session, recipients)
    created: list[Notification] = []
    for item in fresh:
        note = Notification(
            recipient_id=item.recipient.id,
            kind=item.kind,
            title=item.title,
            body=item.body,
            payload=item.payload,
            dedupe_key=item.dedupe_key,
            created_at=now,
            prev_id=last_id.get(item.recipient.id),
            # A notice about the recipient's own action (a claim, a manager taking a lead themselves) is
            # kept in their history but is no news to them: it is born read, so no badge and no toast.
            read_at=now if item.about_own_action else None,
        )
        session.add(note)
        session.flush()  # assigns the id, which the recipient's next notification points back to
        last_id[item.recipient.id] = note.id
        created.append(note)
    for item, note in zip(fresh, created, strict=True):
        for plan in channel_plans(settings, item, chosen_for(settings, choices.get(note.recipient_id), item.kind)):
            session.add(
                Delivery(
                    notification_id=note.id,
                    recipient_id=note.recipient_id,
                    channel=plan.channel,
                    status=plan.status,
                    policy=plan.reason,
                    next_attempt_at=now if plan.status == "pending" else None,
                    created_at=now,
                    updated_at=now,
                )
            )
    session.flush()
    if created:
        after_commit(session, lambda: signals.notifications_committed(recipients))
    return created


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


def latest_ids(session: Session, recipient_ids: set[int]) -> dict[int, int]:
    if not recipient_ids:
        return {}
    rows = session.execute(
        select(Notification.recipient_id, func.max(Notification.id))
        .where(Notification.recipient_id.in_(recipient_ids))
        .group_by(Notification.recipient_id)
    )
    return {rid: mid for rid, mid in rows}


def unread_count(session: Session, user_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Notification)
            .where(Notification.recipient_id == user_id, Notification.read_at.is_(None))
        )
        or 0
    )
