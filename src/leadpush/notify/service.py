"""Reading a user's notifications (catch-up by id, newest, read marks) and the delivery ledger (list, retry)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from leadpush.db import after_commit, rows_changed
from leadpush.errors import ApiError, not_found
from leadpush.notify.channels.base import utc_iso
from leadpush.notify.history import attempts_of
from leadpush.notify.models import Delivery, Notification
from leadpush.notify.schemas import DeliveryAttemptOut, DeliveryDetail, DeliveryOut, NotificationOut
from leadpush.notify.signals import Signals, Wake
from leadpush.permissions import team_members
from leadpush.users.models import User
from leadpush.users.service import is_db_id


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


def push_message(n: Notification) -> dict[str, Any]:
    """`message_of(n)` built by hand: what a commit hands to its recipients' sockets (no model per note)."""
    return {
        "id": n.id,
        "type": n.kind,
        "title": n.title,
        "body": n.body,
        "data": n.payload,
        "createdAt": utc_iso(n.created_at),
        "readAt": utc_iso(n.read_at),
        "deliveredAt": utc_iso(n.delivered_at),
        "prevId": n.prev_id,
    }


def notifications_after(session: Session, user_id: int, after: int, limit: int) -> Sequence[Notification]:
    return session.scalars(
        select(Notification)
        .where(Notification.recipient_id == user_id, Notification.id > after)
        .order_by(Notification.id)
        .limit(limit)
    ).all()


def newest(session: Session, user_id: int, limit: int) -> Sequence[Notification]:
    """The user's newest notifications, newest first."""
    return session.scalars(
        select(Notification).where(Notification.recipient_id == user_id).order_by(Notification.id.desc()).limit(limit)
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


def mark(
    session: Session, user_id: int, ids: list[int] | None, now: datetime, *, read: bool, signals: Signals | None = None
) -> int:
    """Mark notifications delivered (client ack) and, with read, read. Only the user's own rows.

    With `signals`, its ack listeners hear of it in this transaction (reading implies an ack).
    """
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
    if signals is not None:
        signals.acked(session, user_id, ids, now)
    return rows_changed(result) or 0


def delivery_out(d: Delivery, n: Notification, u: User) -> DeliveryOut:
    return DeliveryOut(
        id=d.id,
        notification_id=n.id,
        notification_type=n.kind,
        title=n.title,
        recipient_id=u.id,
        recipient_name=u.name,
        channel=d.channel,  # type: ignore[arg-type]  # one of CHANNELS (the column's values)
        status=d.status,  # type: ignore[arg-type]  # one of STATUSES
        attempts=d.attempts,
        next_attempt_at=d.next_attempt_at,
        last_error=d.last_error,
        policy=d.policy,
        provider_id=d.provider_id,
        created_at=d.created_at,
        updated_at=d.updated_at,
        sent_at=d.sent_at,
        hold_reason=d.hold_reason,
        merged_into=d.merged_into,
        folds=list(d.folds or []),
    )


@dataclass
class DeliveryFilters:
    status: str | None = None
    channel: str | None = None
    user_id: int | None = None
    notification_id: int | None = None


def list_deliveries(
    session: Session, actor: User, filters: DeliveryFilters, page: int, page_size: int
) -> tuple[list[DeliveryOut], int]:
    """The delivery ledger (admins: everyone; managers: their team), newest first, and how many match."""
    query = (
        select(Delivery, Notification, User)
        .join(Notification, Notification.id == Delivery.notification_id)
        .join(User, User.id == Delivery.recipient_id)
    )
    if actor.role == "manager":
        query = query.where(team_members(actor))
    if filters.status:
        query = query.where(Delivery.status == filters.status)
    if filters.channel:
        query = query.where(Delivery.channel == filters.channel)
    if filters.user_id:
        query = query.where(Delivery.recipient_id == filters.user_id)
    if filters.notification_id:
        query = query.where(Delivery.notification_id == filters.notification_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.execute(query.order_by(Delivery.id.desc()).offset((page - 1) * page_size).limit(page_size))
    return [delivery_out(d, n, u) for d, n, u in rows], total


def delivery_detail(session: Session, actor: User, delivery_id: int) -> DeliveryDetail:
    """One delivery and its attempt history (oldest first), under the ledger's visibility: admins see every
    delivery, managers their team's; anything else is "not found" (as if it did not exist)."""
    query = (
        select(Delivery, Notification, User)
        .join(Notification, Notification.id == Delivery.notification_id)
        .join(User, User.id == Delivery.recipient_id)
        .where(Delivery.id == delivery_id)
    )
    if actor.role == "manager":
        query = query.where(team_members(actor))
    row = session.execute(query).first() if is_db_id(delivery_id) else None
    if row is None:
        raise not_found("delivery")
    d, n, u = row
    attempts = [
        DeliveryAttemptOut(
            attempt=a.attempt,
            started_at=a.started_at,
            finished_at=a.finished_at,
            outcome=a.outcome,  # type: ignore[arg-type]
            status=a.status,  # type: ignore[arg-type]
            errcode=a.errcode,
            detail=a.detail,
            worker=a.worker,
        )
        for a in attempts_of(session, d.id)
    ]
    return DeliveryDetail(delivery=delivery_out(d, n, u), attempts=attempts)


def retry_delivery(session: Session, signals: Signals, delivery_id: int, now: datetime) -> DeliveryOut:
    """Send a dead, failed or skipped delivery again with a fresh set of attempts; workers wake on commit."""
    delivery = session.get(Delivery, delivery_id) if is_db_id(delivery_id) else None
    if delivery is None:
        raise not_found("delivery")
    if delivery.status not in ("dead", "failed", "skipped"):
        raise ApiError(409, "not_retryable", f"只有失败、死信或跳过的投递可以重试（当前：{delivery.status}）")
    session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id)
        .values(status="pending", attempts=0, next_attempt_at=now, lease_until=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.refresh(delivery)
    notification = session.get_one(Notification, delivery.notification_id)
    recipient = session.get_one(User, delivery.recipient_id)
    out = delivery_out(delivery, notification, recipient)
    recipient_id = delivery.recipient_id
    after_commit(session, lambda: signals.notifications_committed({recipient_id}, wake=Wake(deadlines=False)))
    return out


def delivery_counts(session: Session, actor: User) -> list[tuple[str, str, int]]:
    """(channel, status, count) of the deliveries `actor` may see (admins: everyone; managers: their team)."""
    query = (
        select(Delivery.channel, Delivery.status, func.count())
        .join(User, User.id == Delivery.recipient_id)
        .group_by(Delivery.channel, Delivery.status)
    )
    if actor.role == "manager":
        query = query.where(team_members(actor))
    return [(c, s, n) for c, s, n in session.execute(query).all()]
