"""Each lead's automatic-transfer deadline, recomputed whenever it is assigned or followed up."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from leadpush.leads.models import Customer


def refresh_deadlines(session: Session, customers: Sequence[Customer], now: datetime) -> None:
    """Placeholder until transfer rules land (issue 5): leads carry no deadline yet."""
    return None
