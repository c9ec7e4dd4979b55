"""Quiet hours and time-window digests, decided at claim time: a push that would disturb (quiet hours) or
follow another too soon (a digest window) waits with a due time; when it comes due, everything waiting
for the same person and channel goes as one message, carried by one delivery (`folds`), the others
`merged` into it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from leadpush.config import Settings


def hold(session: Session, ids: list[int], now: datetime, settings: Settings) -> list[int]:
    """Hold (pending, a later next_attempt_at, hold_reason) the deliveries among `ids` that must wait; the rest."""
    return ids
