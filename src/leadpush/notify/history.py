"""The attempt history of deliveries: one `DeliveryAttempt` row per try, written in the same transaction as
the delivery's outcome (so the history and the delivery never disagree), and read for the deliveries page.

A try whose outcome was never recorded (the worker died mid-send, its lease was taken over) leaves no row:
the next try's number shows the gap.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from leadpush.notify.channels.base import SendResult
from leadpush.notify.models import Delivery, DeliveryAttempt

DETAIL_MAX = 2000


def add_attempt(
    session: Session,
    delivery_id: int,
    attempt: int,
    result: SendResult,
    status: str,
    *,
    started_at: datetime | None,
    finished_at: datetime,
    worker: str | None,
) -> None:
    """One try of `delivery_id`: what the channel answered (`result`) and the delivery's status after it."""
    session.add(
        DeliveryAttempt(
            delivery_id=delivery_id,
            attempt=attempt,
            started_at=started_at,
            finished_at=finished_at,
            outcome=result.outcome,
            status=status,
            errcode=result.errcode,
            detail=(result.detail or None) and result.detail[:DETAIL_MAX],
            worker=worker,
        )
    )


def skipped_at_claim(session: Session, ids: Iterable[int], now: datetime, detail: str, worker: str | None) -> None:
    """Deliveries a claim decided not to send (skipped in this transaction, never handed to a channel):
    each gets a history row (outcome and status "skipped") numbered as the try it would have been."""
    ids = list(ids)
    if not ids:
        return
    tries = dict(session.execute(select(Delivery.id, Delivery.attempts).where(Delivery.id.in_(ids))).all())
    result = SendResult.skipped(detail)
    for delivery_id in ids:
        attempt = (tries.get(delivery_id) or 0) + 1
        add_attempt(session, delivery_id, attempt, result, "skipped", started_at=now, finished_at=now, worker=worker)


def attempts_of(session: Session, delivery_id: int) -> Sequence[DeliveryAttempt]:
    """The delivery's tries, oldest first."""
    return session.scalars(
        select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery_id).order_by(DeliveryAttempt.id)
    ).all()
