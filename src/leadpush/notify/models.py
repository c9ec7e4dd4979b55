"""The notification ledger: notifications, one delivery per channel, workers, and small shared state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from leadpush.clock import utcnow
from leadpush.db import Base, UTCDateTime

KINDS = (
    "customer_assigned",
    "customers_assigned",
    "customer_recycled",
    "customers_recycled",
    "transfer_warning",
    "lead_duplicate",
    "sla_reminder",
    "sla_escalated",
    "followup_due",
)
CHANNELS = ("inapp", "wechat", "wecom", "webhook")
# merged: folded into another delivery of the same recipient and channel (a digest; see `merged_into`).
STATUSES = ("pending", "sending", "sent", "failed", "dead", "skipped", "merged")


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_recipient_id_id", "recipient_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipient_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    # The recipient's previous notification id: lets a live connection tell whether it missed one.
    prev_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("notification_id", "channel"),
        Index("ix_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"))
    recipient_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The worker (workers.id) that claimed it: while `sending`, another worker may take it over as soon
    # as that worker's heartbeat stops, without waiting for lease_until.
    lease_holder: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(Text)
    # Why this channel was chosen (or skipped), for the operator.
    policy: Mapped[str | None] = mapped_column(String(200))
    provider_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A digest: the other notifications this delivery carries (their own rows are `merged` into this one).
    folds: Mapped[list[int] | None] = mapped_column(JSON)
    merged_into: Mapped[int | None] = mapped_column(Integer)
    # Why a pending delivery waits (quiet hours, a digest window), shown to the operator; None = not held.
    hold_reason: Mapped[str | None] = mapped_column(String(200))


class DeliveryAttempt(Base):
    """One try of a delivery: when, what came of it, the platform's errcode (the history behind `attempts`)."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # sent | retry | permanent | skipped (the channel's answer) and the delivery's status after it.
    outcome: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    errcode: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(32))


class NotificationPreference(Base):
    """A person's own notification settings; absent = the team default, then the deployment's policy.

    `channels`: category (notify.policy.CATEGORIES) -> the push channels they want for it, only for the
    categories they changed. `quiet_mode`: team (use the team default) | none | custom (quiet_start to
    quiet_end, "HH:MM" in LEADPUSH_TIMEZONE, may wrap midnight) | working_hours (quiet outside the
    working hours set for routing). `urgent_override`: urgent kinds (SLA reminders) still come in quiet hours.
    """

    __tablename__ = "notification_preferences"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    channels: Mapped[dict[str, list[str]] | None] = mapped_column(JSON)
    quiet_mode: Mapped[str] = mapped_column(String(16), default="team")
    quiet_start: Mapped[str | None] = mapped_column(String(5))
    quiet_end: Mapped[str | None] = mapped_column(String(5))
    urgent_override: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TeamNotificationDefault(Base):
    """A team's default quiet hours for members who keep `quiet_mode = team` (none | custom | working_hours)."""

    __tablename__ = "team_notification_defaults"

    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True)
    quiet_mode: Mapped[str] = mapped_column(String(16), default="none")
    quiet_start: Mapped[str | None] = mapped_column(String(5))
    quiet_end: Mapped[str | None] = mapped_column(String(5))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Worker(Base):
    """A process running the dispatcher, with a heartbeat (see notify/workers.py)."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(100))
    pid: Mapped[int] = mapped_column(Integer)
    # Bumped every heartbeat; others judge liveness by whether it moves, on their own clock.
    beats: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class KeyValue(Base):
    """Small shared state across processes (cached access tokens when there is no Redis)."""

    __tablename__ = "kv"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
