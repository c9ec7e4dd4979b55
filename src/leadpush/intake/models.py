"""Lead sources (where inbound leads come from, how their fields map) and the merges intake recorded."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from leadpush.clock import utcnow
from leadpush.db import Base, UTCDateTime

DUPLICATE_POLICIES = ("merge", "flag")
# What an incoming field may be mapped onto.
LEAD_FIELDS = ("name", "phone", "region", "tags", "note", "externalId")


class LeadSource(Base):
    """A form, an ad platform or another system that sends leads, with its own token and signing secret."""

    __tablename__ = "lead_sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The `source` label written on its leads (e.g. 抖音表单), and its name in the form webhook's URL.
    key: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    # Incoming field name or dotted path ("contact.mobile") -> leadpush field (LEAD_FIELDS).
    field_mapping: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    duplicate_policy: Mapped[str] = mapped_column(String(16), default="merge")
    default_region: Mapped[str] = mapped_column(String(64), default="")
    default_tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The intake token (lpi_...) is stored only as its SHA-256, like API tokens; its first characters are
    # kept so an admin can tell which one a system holds.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_prefix: Mapped[str] = mapped_column(String(12))
    # The form webhook's HMAC key: kept as is (verifying an HMAC needs the key itself), never returned after
    # creation or rotation and never logged.
    signing_secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IntakeMerge(Base):
    """An inbound lead with an external id that was merged into an existing lead (no lead was created for
    it): a repeat of it answers the same merge instead of merging (and notifying) again."""

    __tablename__ = "lead_intake_merges"
    __table_args__ = (Index("uq_lead_intake_merges_source_external", "source_id", "external_id", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("lead_sources.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(128))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
