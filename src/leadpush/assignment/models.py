"""The history of every ownership change."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from leadpush.clock import utcnow
from leadpush.db import Base, UTCDateTime

VIAS = ("web", "miniprogram", "batch", "public_pool", "claim", "release", "auto_transfer", "route", "escalation")


class Assignment(Base):
    __tablename__ = "assignments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    from_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    to_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    via: Mapped[str] = mapped_column(String(16))
    batch_id: Mapped[str | None] = mapped_column(String(36), index=True)
    reason: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Speed to lead, per ownership (only on a move to a person): when the new owner first opened the lead
    # and first followed it up, and by when the SLA rule then in force wanted it opened (None = no rule).
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_follow_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    open_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
