"""Customers (leads) and the follow-ups salespeople record on them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from leadpush.clock import utcnow
from leadpush.db import Base, UTCDateTime

STATUSES = ("new", "following", "won", "lost", "invalid")


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = (
        Index("ix_customers_owner_status", "owner_id", "status"),
        Index("ix_customers_transfer_due_at", "transfer_due_at"),
        # Lead intake is idempotent by (source, externalId): a repeat finds the lead instead of a second one.
        Index("uq_customers_intake_source_external", "intake_source_id", "external_id", unique=True),
        Index("ix_customers_sla_next_at", "sla_next_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    phone: Mapped[str] = mapped_column(String(32), index=True)
    source: Mapped[str] = mapped_column(String(100), default="")
    region: Mapped[str] = mapped_column(String(64), default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default="new")
    note: Mapped[str] = mapped_column(Text, default="")
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # With no owner: the pool the lead is in (None = the company-wide pool) and since when.
    pool_id: Mapped[int | None] = mapped_column(ForeignKey("pools.id", ondelete="SET NULL"), index=True)
    pooled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_follow_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    transfer_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the owner is warned before transfer_due_at, and which rule set the deadline.
    transfer_warn_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    transfer_rule_id: Mapped[int | None] = mapped_column(Integer)
    # The deadline a warning was last sent for: one warning per lead per deadline.
    transfer_warned_for: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Lead intake: the lead source it came in through and its id in the sending system (both None otherwise),
    # and, for a source that flags duplicates, the open lead with the same phone it repeats.
    external_id: Mapped[str | None] = mapped_column(String(128))
    intake_source_id: Mapped[int | None] = mapped_column(ForeignKey("lead_sources.id", ondelete="SET NULL"))
    duplicate_of_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"))
    # First-contact SLA (leadpush.sla): the rule that applies to the current ownership, the last ladder step
    # done (0 none, 1 reminded, 2 manager told, 3 reassigned), the exact time of the next step (None = no
    # step pending), and when the current owner first opened the lead.
    sla_rule_id: Mapped[int | None] = mapped_column(Integer)
    sla_stage: Mapped[int] = mapped_column(Integer, default=0)
    sla_next_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Follow-up plan (下次跟进): when the owner means to contact the lead next, what for, and the time its
    # reminder is due (None once sent, or when there is no plan).
    next_follow_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_follow_up_note: Mapped[str | None] = mapped_column(String(200))
    follow_up_remind_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FollowUp(Base):
    __tablename__ = "follow_ups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    content: Mapped[str] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
