"""Each lead's automatic-transfer deadline, recomputed whenever it is assigned or followed up.

A lead's deadline is the earliest due time among the enabled rules that apply to it (by its owner's
team and its status); the warning time is that deadline minus the rule's warning lead time. Both are
stored on the lead, indexed, so the scheduler finds the next one with one query and a run touches
only leads that are due, not the whole table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from leadpush.db import Database
from leadpush.leads.models import Customer
from leadpush.transfer.models import TransferRule
from leadpush.users.models import User


@dataclass(frozen=True)
class Deadline:
    due_at: datetime
    warn_at: datetime | None
    rule: TransferRule


def rule_due(rule: TransferRule, customer: Customer, owner_team: str | None) -> datetime | None:
    """When `rule` would take `customer` away, or None if it does not apply."""
    if not rule.enabled or customer.owner_id is None or customer.assigned_at is None:
        return None
    if rule.team is not None and rule.team != owner_team:
        return None
    if customer.status in (rule.exempt_statuses or []):
        return None
    span = timedelta(hours=rule.threshold_hours)
    followed = customer.last_follow_up_at
    if rule.condition == "no_follow_up_after_assign":
        if followed is not None and followed >= customer.assigned_at:
            return None
        return customer.assigned_at + span
    if rule.condition == "no_follow_up_since_last":
        base = max(customer.assigned_at, followed) if followed else customer.assigned_at
        return base + span
    if rule.condition == "not_won_within":
        if customer.status == "won":
            return None
        return customer.assigned_at + span
    return None


def deadline_for(rules: Iterable[TransferRule], customer: Customer, owner_team: str | None) -> Deadline | None:
    best: Deadline | None = None
    for rule in rules:
        due = rule_due(rule, customer, owner_team)
        if due is None or (best is not None and (due, rule.id) >= (best.due_at, best.rule.id)):
            continue
        warn = due - timedelta(hours=rule.warn_before_hours) if rule.warn_before_hours else None
        best = Deadline(due, warn, rule)
    return best


def enabled_rules(session: Session) -> list[TransferRule]:
    return list(session.scalars(select(TransferRule).where(TransferRule.enabled.is_(True)).order_by(TransferRule.id)))


def refresh_deadlines(
    session: Session, customers: Sequence[Customer], now: datetime, rules: list[TransferRule] | None = None
) -> None:
    """Recompute and store the deadline of each given lead (in the caller's transaction)."""
    if not customers:
        return
    rules = enabled_rules(session) if rules is None else rules
    owner_ids = {c.owner_id for c in customers if c.owner_id is not None}
    teams: dict[int | None, str | None] = (
        dict(session.execute(select(User.id, User.team).where(User.id.in_(owner_ids))).all()) if owner_ids else {}
    )
    changes: list[dict[str, object]] = []
    for customer in customers:
        deadline = deadline_for(rules, customer, teams.get(customer.owner_id)) if rules else None
        values = {
            "transfer_due_at": deadline.due_at if deadline else None,
            "transfer_warn_at": deadline.warn_at if deadline else None,
            "transfer_rule_id": deadline.rule.id if deadline else None,
        }
        if all(getattr(customer, k) == v for k, v in values.items()):
            continue
        changes.append({"id": customer.id, **values})
        for key, value in values.items():
            set_committed_value(customer, key, value)
    if changes:
        # One executemany by primary key, not one UPDATE statement per lead.
        session.execute(update(Customer), changes)


def recompute_all(db: Database, now: datetime, chunk: int = 2000) -> int:
    """Recompute every owned lead's deadline (after a rule changes), in chunks of short transactions."""
    last_id = 0
    touched = 0
    while True:
        with db.write() as session:
            rules = enabled_rules(session)
            batch = list(
                session.scalars(
                    select(Customer)
                    .where(Customer.owner_id.is_not(None), Customer.id > last_id)
                    .order_by(Customer.id)
                    .limit(chunk)
                )
            )
            if not batch:
                return touched
            refresh_deadlines(session, batch, now, rules)
            last_id = batch[-1].id
            touched += len(batch)


def earliest_pending(session: Session) -> datetime | None:
    """The next moment the scheduler has something to do: a warning or a deadline."""
    due = session.scalar(select(func.min(Customer.transfer_due_at)).where(Customer.owner_id.is_not(None)))
    warn = session.scalar(
        select(func.min(Customer.transfer_warn_at)).where(
            Customer.owner_id.is_not(None),
            Customer.transfer_warn_at.is_not(None),
            (Customer.transfer_warned_for.is_(None)) | (Customer.transfer_warned_for != Customer.transfer_due_at),
        )
    )
    candidates = [t for t in (due, warn) if t is not None]
    return min(candidates) if candidates else None
