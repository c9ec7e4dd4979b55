"""The teams table. Users and transfer rules name their team (`team` = `teams.name`, a foreign key that
follows a rename: ON UPDATE CASCADE), so the API keeps speaking team names."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from leadpush.clock import utcnow
from leadpush.db import Base, UTCDateTime

TEAM_NAME_MAX = 64


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(TEAM_NAME_MAX), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
