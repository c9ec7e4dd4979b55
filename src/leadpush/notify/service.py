"""Reading a user's notifications: catch-up by id, unread counts, read marks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from leadpush.notify.models import Delivery, Notification
from leadpush.notify.schemas import DeliveryOut, NotificationOut
from leadpush.users.models import User


def to_out(n: Notification) -> NotificationOut:
    return NotificationOut(
        id=n.id,
        type=n.kind,
        title=n.title,
        body=n.body,
        data=n.payload,
        created_at=n.created_at,
        read_at=n.read_at,
        delivered_at=n.delivered_at,
    )


def message_of(n: Notification) -> dict[str, Any]:
    """A notification as pushed over WebSocket: the polling item plus `prevId`."""
    return {**to_out(n).model_dump(by_alias=True, mode="json"), "prevId": n.prev_id}


def notifications_after(session: Session, user_id: int, after: int, limit: int) -> Sequence[Notification]:
    return session.scalars(
        select(Notification)
        .where(Notification.recipient_id == user_id, Notification.id > after)
        .order_by(Notification.id)
        .limit(limit)
    ).all()


def latest_id(session: Session, user_id: int) -> int:
    return (
        session.scalar(
            select(Notification.id)
            .where(Notification.recipient_id == user_id)
            .order_by(Notification.id.desc())
            .limit(1)
        )
        or 0
    )


def mark(session: Session, user_id: int, ids: list[int] | None, now: datetime, *, read: bool) -> int:
    """Mark notifications delivered (client ack) and, with read, read. Only the user's own rows."""
    values: dict[str, datetime] = {}
    query = update(Notification).where(Notification.recipient_id == user_id)
    if ids is not None:
        query = query.where(Notification.id.in_(ids))
    if read:
        query = query.where(Notification.read_at.is_(None))
        values["read_at"] = now
    else:
        query = query.where(Notification.delivered_at.is_(None))
        values["delivered_at"] = now
    result = session.execute(query.values(**values).execution_options(synchronize_session=False))
    if read:
        # Read implies delivered.
        session.execute(
            update(Notification)
            .where(
                Notification.recipient_id == user_id,
                Notification.delivered_at.is_(None),
                Notification.read_at.is_not(None),
            )
            .values(delivered_at=now)
            .execution_options(synchronize_session=False)
        )
    return result.rowcount or 0


def delivery_out(d: Delivery, n: Notification, u: User) -> DeliveryOut:
    return DeliveryOut(
        id=d.id,
        notification_id=n.id,
        notification_type=n.kind,
        title=n.title,
        recipient_id=u.id,
        recipient_name=u.name,
        channel=d.channel,
        status=d.status,
        attempts=d.attempts,
        next_attempt_at=d.next_attempt_at,
        last_error=d.last_error,
        policy=d.policy,
        provider_id=d.provider_id,
        created_at=d.created_at,
        updated_at=d.updated_at,
        sent_at=d.sent_at,
    )
