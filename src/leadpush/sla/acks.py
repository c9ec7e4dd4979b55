"""An ack of a notification about a lead, by its owner, opens the lead (the ladder stops).

Only notices about one lead addressed to its owner count: `customer_assigned` (the lead is yours) and
`sla_reminder`; and only for the ownership they were written for (not before the current assignment).
A digest (`customers_assigned`, "您有 12 条新线索") opens none of its leads: seeing that a batch
arrived is not looking at each lead.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from leadpush.context import AppContext
from leadpush.leads.models import Customer
from leadpush.notify.models import Notification
from leadpush.notify.signals import AckListener
from leadpush.sla.progress import open_leads
from leadpush.users.models import User

OPENING_KINDS = ("customer_assigned", "sla_reminder")


def opened_by_ack(ctx: AppContext) -> AckListener:
    """The listener to subscribe with `ctx.signals.subscribe_acks` (the Runtime does)."""

    def on_ack(session: Session, user_id: int, ids: Sequence[int] | None, now: datetime) -> None:
        query = select(Notification.payload, Notification.created_at).where(
            Notification.recipient_id == user_id, Notification.kind.in_(OPENING_KINDS)
        )
        # "All" acks only what this ack marked: the ones delivered just now.
        query = query.where(Notification.delivered_at == now) if ids is None else query.where(Notification.id.in_(ids))
        written: dict[int, datetime] = {}
        for payload, created in session.execute(query):
            cid = payload.get("customerId") if isinstance(payload, dict) else None
            if isinstance(cid, int) and not isinstance(cid, bool):
                written[cid] = max(created, written.get(cid, created))
        if not written:
            return
        current = session.execute(
            select(Customer.id, Customer.assigned_at).where(
                Customer.id.in_(written), Customer.owner_id == user_id, Customer.opened_at.is_(None)
            )
        )
        ids_to_open = [cid for cid, assigned in current if assigned is not None and written[cid] >= assigned]
        if ids_to_open:
            open_leads(ctx, session, session.get_one(User, user_id), ids_to_open, now)

    return on_ack
