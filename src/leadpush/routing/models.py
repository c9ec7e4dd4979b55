"""Distribution (routing) rules, their members, and when each person can take new leads.

A rule is evaluated in `position` order; the first enabled one whose conditions match a lead decides
where it goes. Its rotation state (`cursor_user_id`, each member's `current_weight`) lives here, in the
database, so several api processes share one fair rotation (see `routing.service`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from leadpush.clock import utcnow
from leadpush.db import Base, UTCDateTime

ACTIONS = ("round_robin", "weighted", "least_loaded", "user", "pool")
FALLBACKS = ("pool", "user")
APPLIES_ON = ("new", "released", "recycled")


class DistributionRule(Base):
    __tablename__ = "distribution_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    # Evaluation order, lowest first (ties by id).
    position: Mapped[int] = mapped_column(Integer, default=0, index=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The team whose leads this rule routes and whose manager manages it (teams.name; None = company-wide).
    team: Mapped[str | None] = mapped_column(ForeignKey("teams.name", onupdate="CASCADE"))
    # Conditions, each an any-of list; empty = any.
    sources: Mapped[list[str]] = mapped_column(JSON, default=list)
    regions: Mapped[list[str]] = mapped_column(JSON, default=list)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    # When the rule applies: "new" leads, leads "released" by their owner, leads "recycled" by automatic transfer.
    applies_on: Mapped[list[str]] = mapped_column(JSON, default=lambda: ["new"])
    action: Mapped[str] = mapped_column(String(16))
    target_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # action "pool": which pool (None = the company-wide pool).
    target_pool_id: Mapped[int | None] = mapped_column(ForeignKey("pools.id", ondelete="SET NULL"))
    # When nobody the rule names can take the lead now.
    fallback: Mapped[str] = mapped_column(String(8), default="pool")
    fallback_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    fallback_pool_id: Mapped[int | None] = mapped_column(ForeignKey("pools.id", ondelete="SET NULL"))
    # Round robin (and least-loaded ties): the last person this rule gave a lead to.
    cursor_user_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DistributionMember(Base):
    """A person a rule rotates among, with their weight (action weighted) and smooth-weighted state."""

    __tablename__ = "distribution_members"
    __table_args__ = (UniqueConstraint("rule_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("distribution_rules.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    weight: Mapped[int] = mapped_column(Integer, default=1)
    # Smooth weighted round robin (nginx): raised by the weight each turn, lowered by the total when chosen.
    current_weight: Mapped[int] = mapped_column(Integer, default=0)


class UserAvailability(Base):
    """When a person takes routed leads. No row, or no working hours, = always (leave still applies).

    `working_hours`: ISO weekday ("1" Monday … "7" Sunday) -> [["09:00", "18:00"], ...] in
    LEADPUSH_TIMEZONE; a weekday missing from the map is a day off. Leave: from `leave_from` (None = already)
    until `leave_until` (None = until further notice), when at least one is set.
    """

    __tablename__ = "user_availability"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    working_hours: Mapped[dict[str, list[list[str]]] | None] = mapped_column(JSON)
    leave_from: Mapped[datetime | None] = mapped_column(UTCDateTime)
    leave_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
