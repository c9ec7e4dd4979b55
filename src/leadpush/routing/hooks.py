"""Where the rest of leadpush asks routing for a decision.

Until distribution rules exist these decide nothing: new leads stay in the pool they were put in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from leadpush.context import AppContext
from leadpush.leads.models import Customer
from leadpush.users.models import User

if TYPE_CHECKING:
    from leadpush.assignment.service import ChangeResult


def route_new_leads(
    ctx: AppContext, session: Session, customers: Sequence[Customer], *, actor: User | None
) -> ChangeResult | None:
    """Route leads just created without an owner (in the caller's transaction); None if no rule applied."""
    return None


def route_returned_leads(
    ctx: AppContext, session: Session, customers: Sequence[Customer], *, via: str
) -> ChangeResult | None:
    """Route leads just returned to a pool (`via` release or auto_transfer) when a rule says so."""
    return None


def next_in_rotation(session: Session, customer: Customer, *, exclude: set[int]) -> User | None:
    """The next person the rule that routed `customer` would pick (for an escalation's reassignment)."""
    return None
