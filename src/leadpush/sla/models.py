"""First-contact SLA rules: when a newly assigned lead nobody opened is reminded, escalated, reassigned.

The per-lead progress lives on `customers` (sla_rule_id, sla_stage, sla_next_at, opened_at) and the
per-ownership measurement on `assignments` (opened_at, first_follow_up_at, open_due_at).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from leadpush.clock import utcnow
from leadpush.db import Base, UTCDateTime

REASSIGN_ACTIONS = ("next", "pool")
# The ladder's steps in order; customers.sla_stage is the last one done (0 = none yet).
STEPS = ("remind", "manager", "reassign")


class SlaRule(Base):
    __tablename__ = "sla_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    # The owner's team it applies to (teams.name); None = company-wide.
    team: Mapped[str | None] = mapped_column(ForeignKey("teams.name", onupdate="CASCADE"))
    # Lead sources (customers.source) it applies to; empty = every source.
    sources: Mapped[list[str]] = mapped_column(JSON, default=list)
    remind_after_minutes: Mapped[int | None] = mapped_column(Integer)
    manager_after_minutes: Mapped[int | None] = mapped_column(Integer)
    reassign_after_minutes: Mapped[int | None] = mapped_column(Integer)
    reassign_action: Mapped[str] = mapped_column(String(8), default="next")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def step_minutes(self) -> list[tuple[int, int]]:
        """(stage, minutes after assignment) of each configured step, in order."""
        minutes = (self.remind_after_minutes, self.manager_after_minutes, self.reassign_after_minutes)
        return [(i + 1, m) for i, m in enumerate(minutes) if m is not None]
