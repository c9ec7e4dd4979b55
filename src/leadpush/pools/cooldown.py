"""Previous-owner cooldown: who lost a lead recently may not get it straight back (by claim, assignment
or automatic transfer) until the cooldown has passed."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from leadpush.assignment.models import Assignment


def lost_since(session: Session, customer_ids: Iterable[int], since: datetime) -> dict[int, dict[int, datetime]]:
    """For each lead, the people it was taken from (or who gave it up) at or after `since`, and when last."""
    ids = list(set(customer_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(Assignment.customer_id, Assignment.from_user_id, func.max(Assignment.created_at))
        .where(
            Assignment.customer_id.in_(ids),
            Assignment.from_user_id.is_not(None),
            Assignment.created_at >= since,
        )
        .group_by(Assignment.customer_id, Assignment.from_user_id)
    )
    found: dict[int, dict[int, datetime]] = {}
    for customer_id, user_id, at in rows:
        if user_id is not None:  # always, by the query: for the type checker
            found.setdefault(customer_id, {})[user_id] = at
    return found
