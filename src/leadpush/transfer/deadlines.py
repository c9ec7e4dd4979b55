"""Each lead's automatic-transfer deadline, recomputed whenever it is assigned or followed up.

A lead's deadline is the earliest due time among the enabled rules that apply to it (by its owner's
team and its status); the warning time is that deadline minus the rule's warning lead time. Both are
stored on the lead, indexed, so the scheduler finds the next one with one query and a run touches
only leads that are due, not the whole table.

Three refinements: a `user` rule does not apply to a lead its target already owns (another rule's
deadline may); a rule saved with a grace period gives the leads it would take at once until the end of
the grace; and a lead whose move failed is due again only at its backoff's retry time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from leadpush import rulecache
from leadpush.db import Database
from leadpush.leads.models import Customer
from leadpush.notify.signals import deadlines_written
from leadpush.transfer.models import TransferBackoff, TransferRule
from leadpush.users.service import users_in_hand


@dataclass(frozen=True)
class Deadline:
    due_at: datetime
    warn_at: datetime | None
    rule: TransferRule
    # Due later than the rule says: a failed move is tried again then (see engine.back_off).
    backed_off: bool = False
    # Due at the end of the rule's grace period rather than when the rule says.
    graced: bool = False


def _rule_due(rule: TransferRule, customer: Customer, owner_team: str | None) -> tuple[datetime, bool] | None:
    """(due, graced): when `rule` would take `customer` away, and whether a grace period pushed it back."""
    if not rule.enabled or customer.owner_id is None or customer.assigned_at is None:
        return None
    if rule.team is not None and rule.team != owner_team:
        return None
    if customer.status in (rule.exempt_statuses or []):
        return None
    if rule.action == "user" and rule.target_user_id == customer.owner_id:
        return None  # the lead is already where the rule would send it
    span = timedelta(hours=rule.threshold_hours)
    followed = customer.last_follow_up_at
    if rule.condition == "no_follow_up_after_assign":
        if followed is not None and followed >= customer.assigned_at:
            return None
        base = customer.assigned_at
    elif rule.condition == "no_follow_up_since_last":
        base = max(customer.assigned_at, followed) if followed else customer.assigned_at
    elif rule.condition == "not_won_within":
        if customer.status == "won":
            return None
        base = customer.assigned_at
    else:
        return None
    due = base + span
    # Leads already running when the rule was saved with a grace period, that it would have taken before
    # the grace ends, go at its end instead.
    if rule.grace_from is not None and rule.grace_until is not None and base < rule.grace_from < rule.grace_until:
        if due < rule.grace_until:
            return rule.grace_until, True
    return due, False


def rule_due(rule: TransferRule, customer: Customer, owner_team: str | None) -> datetime | None:
    """When `rule` would take `customer` away, or None if it does not apply."""
    found = _rule_due(rule, customer, owner_team)
    return found[0] if found else None


def deadline_for(
    rules: Iterable[TransferRule],
    customer: Customer,
    owner_team: str | None,
    backoff: TransferBackoff | None = None,
) -> Deadline | None:
    """The earliest deadline among `rules` for `customer`; with a `backoff` of its current tenure, not
    before that backoff's retry time (and without a second warning: the owner was warned already)."""
    best: Deadline | None = None
    for rule in rules:
        found = _rule_due(rule, customer, owner_team)
        if found is None:
            continue
        due, graced = found
        if best is not None and (due, rule.id) >= (best.due_at, best.rule.id):
            continue
        if rule.warn_before_hours:
            warn: datetime | None = due - timedelta(hours=rule.warn_before_hours)
        else:
            # A graced lead's owner is told at once that the new rule takes it at the end of the grace period.
            warn = rule.grace_from if graced else None
        best = Deadline(due, warn, rule, graced=graced)
    if (
        best is not None
        and backoff_applies(backoff, customer)
        and backoff is not None
        and backoff.retry_at > best.due_at
    ):
        best = Deadline(backoff.retry_at, None, best.rule, backed_off=True)
    return best


def backoff_applies(backoff: TransferBackoff | None, customer: Customer) -> bool:
    """Whether a stored backoff belongs to the lead's current tenure (same owner, same assignment)."""
    return backoff is not None and backoff.owner_id == customer.owner_id and backoff.assigned_at == customer.assigned_at


def backoffs_for(session: Session, customer_ids: Iterable[int], chunk: int = 1000) -> dict[int, TransferBackoff]:
    ids = sorted(set(customer_ids))
    found: dict[int, TransferBackoff] = {}
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        found.update(
            (b.customer_id, b)
            for b in session.scalars(select(TransferBackoff).where(TransferBackoff.customer_id.in_(part)))
        )
    return found


def enabled_rules(session: Session) -> list[TransferRule]:
    return list(session.scalars(select(TransferRule).where(TransferRule.enabled.is_(True)).order_by(TransferRule.id)))


def rules_in_force(session: Session) -> list[TransferRule]:
    """The enabled rules as this process's copy has them (read-only; see leadpush.rulecache)."""
    return rulecache.cached(session, "transfer_rules", lambda: enabled_rules(session))


def refresh_deadlines(
    session: Session,
    customers: Sequence[Customer],
    now: datetime,
    rules: list[TransferRule] | None = None,
    updates: list[dict[str, object]] | None = None,
    backoffs: dict[int, TransferBackoff] | None = None,
) -> None:
    """Recompute and store the deadline of each given lead (in the caller's transaction).

    With `updates`, the leads' changed columns are added there for the caller to write with its own (see
    `leadpush.assignment.service.write_lead_updates`) instead of with an UPDATE here. `backoffs`: the leads'
    stored backoffs when the caller already read them (`{}`: it knows there are none); None = read them here."""
    if not customers:
        return
    rules = rules_in_force(session) if rules is None else rules
    owner_ids = {c.owner_id for c in customers if c.owner_id is not None}
    teams: dict[int | None, str | None] = {uid: u.team for uid, u in users_in_hand(session, owner_ids).items()}
    if not rules:
        backoffs = {}
    elif backoffs is None:
        backoffs = backoffs_for(session, (c.id for c in customers))
    by_id = {c.id: c for c in customers}
    stale = [cid for cid, b in backoffs.items() if not backoff_applies(b, by_id[cid])]
    if stale:
        # The lead changed hands since its move failed: the new tenure starts without a backoff.
        session.execute(delete(TransferBackoff).where(TransferBackoff.customer_id.in_(stale)))
    changes: list[dict[str, object]] = []
    written: list[datetime | None] = []
    for customer in customers:
        owner_team = teams.get(customer.owner_id)
        deadline = deadline_for(rules, customer, owner_team, backoffs.get(customer.id)) if rules else None
        if deadline is not None:
            written += (deadline.due_at, deadline.warn_at)
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
    deadlines_written(session, written)  # the commit's wake-up carries the earliest to the scheduler
    if updates is not None:
        updates.extend(changes)
    elif changes:
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


def earliest_pending_queries() -> tuple[Select[datetime | None], Select[datetime | None]]:
    """The earliest deadline and the earliest warning not yet given, as two one-value statements."""
    due = select(func.min(Customer.transfer_due_at)).where(Customer.owner_id.is_not(None))
    warn = select(func.min(Customer.transfer_warn_at)).where(
        Customer.owner_id.is_not(None),
        Customer.transfer_warn_at.is_not(None),
        (Customer.transfer_warned_for.is_(None)) | (Customer.transfer_warned_for != Customer.transfer_due_at),
    )
    return due, warn


def earliest_pending(session: Session) -> datetime | None:
    """The next moment the scheduler has something to do: a warning or a deadline."""
    due, warn = (session.scalar(query) for query in earliest_pending_queries())
    candidates = [t for t in (due, warn) if t is not None]
    return min(candidates) if candidates else None
