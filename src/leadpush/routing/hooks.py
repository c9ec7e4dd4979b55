"""Where the rest of leadpush asks routing for a decision (see `routing.engine`).

Each runs in the caller's transaction: the rules it uses stay locked until that transaction commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.leads.models import Customer
from leadpush.users.models import User

if TYPE_CHECKING:
    from leadpush.assignment.service import ChangeResult


def route_new_leads(
    ctx: AppContext, session: Session, customers: Sequence[Customer], *, actor: User | None
) -> ChangeResult | None:
    """Route leads just created without an owner (in the caller's transaction); None if no rule applied.

    `actor` (who created them) is recorded as the assignment's actor, and their team is the leads' team unless
    the leads sit in a team's pool.
    """
    from leadpush.routing import engine

    teams = engine.new_lead_teams(session, customers, actor)
    return engine.route(ctx, session, customers, event="new", actor=actor, teams=teams)


def route_returned_leads(
    ctx: AppContext,
    session: Session,
    customers: Sequence[Customer],
    *,
    via: str,
    batch_id: str | None = None,
    notify: bool = True,
) -> ChangeResult | None:
    """Route leads just returned to a pool when a rule says so: `via` release -> rules for "released";
    auto_transfer or escalation (an SLA step) -> rules for "recycled". With `batch_id` and `notify=False`
    the moves join the caller's batch, whose people are told later (a transfer run)."""
    from leadpush.routing import engine

    event = engine.VIA_EVENT.get(via)
    if event is None:
        return None
    teams = engine.returned_lead_teams(session, customers)
    return engine.route(ctx, session, customers, event=event, actor=None, teams=teams, batch_id=batch_id, notify=notify)


def next_in_rotation(
    session: Session,
    customer: Customer,
    *,
    exclude: set[int],
    settings: Settings | None = None,
    now: datetime | None = None,
) -> User | None:
    """The next person the rule that routed `customer` would pick (for an escalation's reassignment).

    That rule is the first enabled rotating (or named-person) rule whose conditions match the lead; the
    rotation advances, as it does for any lead it hands out. Nobody available (or no such rule): None.
    Pass `settings` and `now` (the app's) so working hours use LEADPUSH_TIMEZONE and the app clock.
    """
    from leadpush.clock import utcnow
    from leadpush.routing import engine

    return engine.next_for(session, customer, exclude, settings or Settings(), now or utcnow())
