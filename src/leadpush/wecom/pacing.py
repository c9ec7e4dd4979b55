"""WeCom pacing: at most N messages a minute / an hour to one member, the excess folded into a digest.

WeCom silently drops (errcode 0!) anything past 30 messages a minute or 1,000 an hour to one member,
so the channel paces itself. Each member has a sliding window of send times in the shared `kv`
table (one small locked row, so every worker process sees the same window). A delivery that finds
the window full is deferred (retry_after = until a slot frees) and marked as such; the next
delivery to that member that gets a slot claims every deferred one and sends them all as one digest
textcard, marking each folded delivery sent with the digest's msgid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from leadpush.db import Database, rows_changed
from leadpush.notify.channels.base import DeliveryJob, FoldedNote, SendResult
from leadpush.notify.digest import folded_notes
from leadpush.notify.history import add_attempt
from leadpush.notify.models import Delivery, KeyValue, Notification

PACE_DEFERRED = "企业微信限速延后"


@dataclass(frozen=True)
class Slot:
    """The pacer's answer: send now (wait 0), or wait; a deferred `leader` will fold the others."""

    wait: float
    leader: bool = False


FOLLOWER_MARGIN = 30.0  # followers come back this long after their leader, which should have folded them


def take_slot(db: Database, member: str, now: datetime, per_minute: int, per_hour: int) -> Slot:
    """Record a send to `member` now if the window allows it; otherwise say how long to wait.

    Of the deliveries deferred in one window, exactly one is the leader (elected in this same locked
    row): it comes back first, gets a slot and folds the rest, which are scheduled later as followers.
    """
    key = f"wecom-pace:{member.lower()}"
    t = now.timestamp()
    for _ in range(5):
        try:
            with db.write() as session:
                row = session.get(KeyValue, key, with_for_update=db.is_postgres)
                state = json.loads(row.value) if row else {}
                stamps = sorted(x for x in state.get("stamps", []) if x > t - 3600)
                leader_until = state.get("leaderUntil")
                minute = [x for x in stamps if x > t - 60]
                wait = 0.0
                if len(minute) >= per_minute:
                    wait = max(0.5, minute[len(minute) - per_minute] + 60 - t)
                elif len(stamps) >= per_hour:
                    wait = max(0.5, stamps[len(stamps) - per_hour] + 3600 - t)
                if wait:
                    if leader_until is None or leader_until < t:
                        slot = Slot(wait, leader=True)
                        leader_until = t + wait + FOLLOWER_MARGIN
                    else:
                        slot = Slot(leader_until - t + FOLLOWER_MARGIN / 2)
                else:
                    slot, leader_until = Slot(0.0), None  # whoever sends now folds everything deferred
                    stamps.append(t)
                value = json.dumps({"stamps": stamps, "leaderUntil": leader_until})
                until = now + timedelta(hours=1, minutes=5)
                if row is None:
                    session.add(KeyValue(key=key, value=value, expires_at=until))
                else:
                    row.value, row.expires_at = value, until
                return slot
        except IntegrityError:
            continue  # two first sends raced to create the row; read theirs
    return Slot(1.0)


@dataclass(frozen=True)
class Folded:
    delivery_id: int
    attempts: int
    kind: str
    title: str
    payload: dict[str, Any]
    # What the deferred delivery itself carries (a digest folded at claim, notify/digest.py): shown too.
    notes: tuple[FoldedNote, ...] = ()


def claim_deferred(db: Database, job: DeliveryJob, now: datetime, lease_seconds: float) -> list[Folded]:
    """Take over every delivery to this member deferred by pacing, to send them in one digest."""
    marker = f"合并中:{job.delivery_id}:{job.attempts}"
    with db.write() as session:
        ids = list(
            session.scalars(
                select(Delivery.id).where(
                    Delivery.channel == "wecom",
                    Delivery.recipient_id == job.recipient.id,
                    Delivery.status == "failed",
                    Delivery.last_error.like(PACE_DEFERRED + "%"),
                    Delivery.id != job.delivery_id,
                )
            )
        )
        if not ids:
            return []
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), Delivery.status == "failed", Delivery.last_error.like(PACE_DEFERRED + "%"))
            .values(
                status="sending",
                attempts=Delivery.attempts + 1,
                lease_until=now + timedelta(seconds=lease_seconds),
                lease_holder=job.lease_holder,
                last_error=marker,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        rows = session.execute(
            select(
                Delivery.id,
                Delivery.attempts,
                Notification.kind,
                Notification.title,
                Notification.payload,
                Delivery.folds,
            )
            .join(Notification, Notification.id == Delivery.notification_id)
            .where(Delivery.id.in_(ids), Delivery.status == "sending", Delivery.last_error == marker)
            .order_by(Delivery.notification_id)
        ).all()
        notes = folded_notes(session, (n for row in rows for n in row.folds or []))
        return [
            Folded(
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                notes=tuple(notes[n] for n in sorted(set(row.folds or [])) if n in notes),
            )
            for row in rows
        ]


def settle_folded(
    db: Database,
    folded: list[Folded],
    result: SendResult,
    now: datetime,
    started_at: datetime | None = None,
    worker: str | None = None,
) -> None:
    """The folded deliveries share the digest's fate: sent, dead, or deferred again (still foldable).

    Each keeps the try in its attempt history (started when it was folded in, by the sending worker).
    """
    if result.outcome == "sent":
        values: dict[str, Any] = dict(status="sent", sent_at=now, provider_id=result.provider_id, last_error=None)
    elif result.outcome == "permanent":
        values = dict(status="dead", last_error=result.detail)
    else:
        delay = max(result.retry_after or 0, 30.0)
        values = dict(
            status="failed",
            next_attempt_at=now + timedelta(seconds=delay),
            last_error=f"{PACE_DEFERRED}：合并发送失败（{result.detail}）",
        )
    status = str(values["status"])
    with db.write() as session:
        for f in folded:
            done = session.execute(
                update(Delivery)
                .where(Delivery.id == f.delivery_id, Delivery.status == "sending", Delivery.attempts == f.attempts)
                .values(lease_until=None, updated_at=now, **values)
                .execution_options(synchronize_session=False)
            )
            if rows_changed(done) == 1:
                detail = str(values.get("last_error") or result.detail or "") or "合并为一条摘要发送"
                add_attempt(
                    session,
                    f.delivery_id,
                    f.attempts,
                    replace(result, detail=detail),
                    status,
                    started_at=started_at,
                    finished_at=now,
                    worker=worker,
                )
