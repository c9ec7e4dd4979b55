"""Pools: a lead with no owner sits in a pool. `customers.pool_id` NULL is the company-wide pool (公海),
governed by the deployment's settings; a row here is a further pool, usually a team's, with its own rules
(None in a rule column = the deployment's setting)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from leadpush.clock import utcnow
from leadpush.db import Base, UTCDateTime

MEMBER_ROLES = ("member", "admin")


class Pool(Base):
    __tablename__ = "pools"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # The team whose pool this is (teams.name; None = open to the whole company).
    team: Mapped[str | None] = mapped_column(ForeignKey("teams.name", onupdate="CASCADE"))
    claim_daily_limit: Mapped[int | None] = mapped_column(Integer)
    cooldown_hours: Mapped[float | None] = mapped_column(Float)
    embargo_minutes: Mapped[int] = mapped_column(Integer, default=0)
    hide_phone: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PoolMember(Base):
    __tablename__ = "pool_members"
    __table_args__ = (UniqueConstraint("pool_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16), default="member")
