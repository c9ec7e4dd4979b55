"""Previous-owner cooldown: who lost a lead recently may not get it straight back (by claim, assignment
or automatic transfer) until the cooldown has passed."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.orm import Session

from leadpush.assignment.models import Assignment

_history = cast(Table, Assignment.__table__).c
# Built once (a Core statement on the table: no ORM pass, no statement built and cache-keyed per call).
_LOST = (
    select(_history.customer_id, _history.from_user_id, func.max(_history.created_at))
    .where(
        _history.customer_id.in_(bindparam("ids", expanding=True)),
        _history.from_user_id.is_not(None),
        _history.created_at >= bindparam("since", type_=_history.created_at.type),
    )
    .group_by(_history.customer_id, _history.from_user_id)
)


def lost_since(session: Session, customer_ids: Iterable[int], since: datetime) -> dict[int, dict[int, datetime]]:
    """For each lead, the people it was taken from (or who gave it up) at or after `since`, and when last."""
    ids = list(set(customer_ids))
    if not ids:
        return {}
    rows = session.execute(_LOST, {"ids": ids, "since": since})
    found: dict[int, dict[int, datetime]] = {}
    for customer_id, user_id, at in rows:
        if user_id is not None:  # always, by the query: for the type checker
            found.setdefault(customer_id, {})[user_id] = at
    return found
