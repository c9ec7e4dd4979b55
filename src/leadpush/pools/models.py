"""Pools: a lead with no owner sits in a pool. `customers.pool_id` NULL is the company-wide pool (公海),
governed by the deployment's settings; a row here is a further pool, usually a team's, with its own rules
(None in a rule column = the deployment's setting)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from leadpush.clock import utcnow
from leadpush.db import Base, UTCDateTime

MEMBER_ROLES = ("member", "admin")
# What the answers call the company pool (pool_id NULL).
COMPANY_POOL_NAME = "公司公海"


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


class PoolClaim(Base):
    """One claim from a pool (pool_id NULL = the company pool): what a pool's daily claim limit counts.

    The assignment history says who claimed which lead, but not from which pool (a claimed lead has left
    it); a pool's limit counts claims from that pool only.
    """

    __tablename__ = "pool_claims"
    __table_args__ = (Index("ix_pool_claims_user_created", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pool_id: Mapped[int | None] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
