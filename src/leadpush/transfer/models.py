"""Automatic transfer (自动流转) rules and the history of each run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from leadpush.clock import utcnow
from leadpush.db import Base, UTCDateTime

CONDITIONS = ("no_follow_up_after_assign", "no_follow_up_since_last", "not_won_within")
ACTIONS = ("public_pool", "round_robin", "user")
TRIGGERS = ("cron", "manual", "deadline")


class TransferRule(Base):
    __tablename__ = "transfer_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    # The team's name (teams.name, None = company-wide); a rename follows through ON UPDATE CASCADE.
    team: Mapped[str | None] = mapped_column(ForeignKey("teams.name", onupdate="CASCADE"))
    condition: Mapped[str] = mapped_column(String(32))
    # Hours for no_follow_up_after_assign; days are stored as hours too (days * 24).
    threshold_hours: Mapped[float] = mapped_column(Float)
    exempt_statuses: Mapped[list[str]] = mapped_column(JSON, default=list)
    action: Mapped[str] = mapped_column(String(16))
    target_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    warn_before_hours: Mapped[float | None] = mapped_column(Float)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Round-robin cursor: the last user id a lead went to under this rule.
    last_assignee_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A grace period granted when the rule was saved: leads whose clock started before grace_from and that
    # the rule would make due before grace_until are due at grace_until instead (see deadlines.rule_due).
    grace_from: Mapped[datetime | None] = mapped_column(UTCDateTime)
    grace_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TransferRun(Base):
    __tablename__ = "transfer_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trigger: Mapped[str] = mapped_column(String(16))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    examined: Mapped[int] = mapped_column(Integer, default=0)
    moved: Mapped[int] = mapped_column(Integer, default=0)
    warned: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class TransferBackoff(Base):
    """A lead the automatic transfer could not move: when to try again, and how many tries failed in a row.

    It belongs to one tenure of the lead (its owner and assignment time): once the lead changes hands the
    row no longer applies (and is dropped the next time its deadline is computed).
    """

    __tablename__ = "transfer_backoffs"

    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(Integer)
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rule_id: Mapped[int | None] = mapped_column(Integer, index=True)
    failures: Mapped[int] = mapped_column(Integer, default=1)
    reason: Mapped[str] = mapped_column(String(200), default="")
    first_failed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    retry_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Lease(Base):
    """A named lease so only one process runs a singleton job (a transfer run) at a time."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100))
    until: Mapped[datetime] = mapped_column(UTCDateTime)
