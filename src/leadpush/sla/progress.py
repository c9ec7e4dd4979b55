"""Where a lead stands in its first contact: the ladder started on assignment, stopped by an open, and
the speed-to-lead stamps of the current ownership (opened, first follow-up).

Called from the ownership change (`start_ladders`), the lead detail and notification acks (`open_leads`)
and follow-ups (`followed_up`), all in the caller's transaction. It reaches the `assignments` history
through a lightweight table, not `leadpush.assignment`: leads may not import assignment, and follow-ups
are recorded by leads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Integer, bindparam, column, func, select, table, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from leadpush import rulecache
from leadpush.context import AppContext
from leadpush.db import UTCDateTime, after_commit
from leadpush.leads.models import Customer
from leadpush.notify.signals import deadlines_written
from leadpush.sla.models import SlaRule
from leadpush.users.models import User
from leadpush.users.service import users_in_hand

# The columns of `assignments` this module writes (see leadpush.assignment.models.Assignment).
ASSIGNMENTS = table(
    "assignments",
    column("id", Integer),
    column("customer_id", Integer),
    column("to_user_id", Integer),
    column("created_at", UTCDateTime()),
    column("opened_at", UTCDateTime()),
    column("first_follow_up_at", UTCDateTime()),
    column("open_due_at", UTCDateTime()),
)


def _current_ownership(customer_id: object) -> object:
    """The id of the lead's latest history row: the move that gave its current owner the lead."""
    latest = ASSIGNMENTS.alias("latest")
    return select(func.max(latest.c.id)).where(latest.c.customer_id == customer_id).scalar_subquery()


def enabled_rules(session: Session) -> list[SlaRule]:
    return list(session.scalars(select(SlaRule).where(SlaRule.enabled.is_(True)).order_by(SlaRule.id)))


def rules_in_force(session: Session) -> list[SlaRule]:
    """The enabled rules as this process's copy has them (read-only; see leadpush.rulecache)."""
    return rulecache.cached(session, "sla_rules", lambda: enabled_rules(session))


def rule_for(rules: Iterable[SlaRule], owner_team: str | None, source: str) -> SlaRule | None:
    """The most specific enabled rule for a lead of `source` owned by someone in `owner_team`.

    A team's rule beats a company-wide one, one naming the source beats one for every source, then the
    oldest rule wins.
    """
    best: tuple[int, int, int] | None = None
    chosen: SlaRule | None = None
    for rule in rules:
        if not rule.enabled or not rule.step_minutes():
            continue
        if rule.team is not None and rule.team != owner_team:
            continue
        if rule.sources and source not in rule.sources:
            continue
        rank = (0 if rule.team is not None else 1, 0 if rule.sources else 1, rule.id)
        if best is None or rank < best:
            best, chosen = rank, rule
    return chosen


def next_step(rule: SlaRule, done: int) -> tuple[int, int] | None:
    """(stage, minutes after assignment) of the first step after stage `done`, or None."""
    return next(((stage, minutes) for stage, minutes in rule.step_minutes() if stage > done), None)


def start_ladders(
    session: Session,
    customers: Sequence[Customer],
    now: datetime,
    actor_id: int | None = None,
    updates: list[dict[str, object]] | None = None,
    history: dict[int, dict[str, object]] | None = None,
) -> None:
    """After an ownership change: each lead's ladder starts afresh for its new owner (or ends in a pool).

    The lead counts as not opened by its new owner; the rule in force is chosen by the owner's team and
    the lead's source, and the time it wanted the lead opened is kept on the ownership's history row.
    A lead its new owner took themselves (a claim, a manager taking one) is opened at once: they have
    looked at it, and no ladder runs (the report leaves such moves out).

    With `updates`, the leads' changed columns are added there for the caller to write (as `refresh_deadlines`).
    With `history` (each lead's history row of this change, not inserted yet, by lead id), its `open_due_at`
    and `opened_at` are set there, to go in with the row, instead of an UPDATE of the row once inserted.
    """
    if not customers:
        return
    owner_ids = {c.owner_id for c in customers if c.owner_id is not None}
    rules = rules_in_force(session) if owner_ids else []
    teams: dict[int | None, str | None] = {uid: u.team for uid, u in users_in_hand(session, owner_ids).items()}
    changes: list[dict[str, object]] = []
    due: list[dict[str, object]] = []
    taken: list[dict[str, object]] = []
    steps: list[datetime | None] = []
    for customer in customers:
        self_taken = customer.owner_id is not None and customer.owner_id == actor_id
        if self_taken:
            taken.append({"cid": customer.id})
        rule = (
            rule_for(rules, teams.get(customer.owner_id), customer.source)
            if customer.owner_id and not self_taken
            else None
        )
        step = next_step(rule, 0) if rule else None
        base = customer.assigned_at or now
        next_at = base + timedelta(minutes=step[1]) if step else None
        steps.append(next_at)
        values: dict[str, object] = {
            "sla_rule_id": rule.id if rule and step else None,
            "sla_stage": 0,
            "sla_next_at": next_at,
            "opened_at": now if self_taken else None,
        }
        if rule is not None and step is not None:
            due.append({"cid": customer.id, "due": base + timedelta(minutes=rule.step_minutes()[0][1])})
        if all(getattr(customer, k) == v for k, v in values.items()):
            continue
        changes.append({"id": customer.id, **values})
        for key, value in values.items():
            set_committed_value(customer, key, value)
    deadlines_written(session, steps)  # the commit's wake-up carries the earliest to the scheduler
    if updates is not None:
        updates.extend(changes)
    elif changes:
        session.execute(update(Customer), changes)
    if history is not None:
        for row in due:
            history[cast(int, row["cid"])]["open_due_at"] = row["due"]
        for row in taken:
            history[cast(int, row["cid"])]["opened_at"] = now
        return
    if due:
        session.execute(
            update(ASSIGNMENTS)
            .where(ASSIGNMENTS.c.id == _current_ownership(bindparam("cid")))
            .values(open_due_at=bindparam("due")),
            due,
        )
    if taken:
        session.execute(
            update(ASSIGNMENTS).where(ASSIGNMENTS.c.id == _current_ownership(bindparam("cid"))).values(opened_at=now),
            taken,
        )


@dataclass(frozen=True)
class Stamp:
    """A first open or first follow-up of an ownership: how long after the assignment, by whom."""

    customer_id: int
    team: str | None
    seconds: float


def open_leads(
    ctx: AppContext, session: Session, user: User, customer_ids: Iterable[int], now: datetime
) -> list[Stamp]:
    """`user` opened these leads: those they own and had not opened yet are opened now, their ladders end.

    Observed in the metrics after commit. Returns the leads opened by this call.
    """
    ids = sorted(set(customer_ids))
    if not ids:
        return []
    rows = session.execute(
        update(Customer)
        .where(Customer.id.in_(ids), Customer.owner_id == user.id, Customer.opened_at.is_(None))
        .values(opened_at=now, sla_next_at=None)
        .returning(Customer.id, Customer.assigned_at)
        .execution_options(synchronize_session=False)
    ).all()
    if not rows:
        return []
    for row in rows:
        cached = session.identity_map.get(session.identity_key(Customer, row.id))
        if isinstance(cached, Customer):
            set_committed_value(cached, "opened_at", now)
            set_committed_value(cached, "sla_next_at", None)
    session.execute(
        update(ASSIGNMENTS)
        .where(
            ASSIGNMENTS.c.id == _current_ownership(bindparam("cid")),
            ASSIGNMENTS.c.to_user_id == user.id,
            ASSIGNMENTS.c.opened_at.is_(None),
        )
        .values(opened_at=now),
        [{"cid": r.id} for r in rows],
    )
    stamps = [Stamp(r.id, user.team, (now - (r.assigned_at or now)).total_seconds()) for r in rows]
    metrics = ctx.sla_metrics

    def observe() -> None:
        for stamp in stamps:
            metrics.opened(stamp.team, stamp.seconds)

    after_commit(session, observe)
    return stamps


def first_follow_up_of(session: Session, customer: Customer) -> datetime | None:
    """The current owner's first follow-up of the lead in this ownership (None: none yet, or in a pool)."""
    if customer.owner_id is None:
        return None
    return session.scalar(
        select(ASSIGNMENTS.c.first_follow_up_at).where(
            ASSIGNMENTS.c.id == _current_ownership(customer.id), ASSIGNMENTS.c.to_user_id == customer.owner_id
        )
    )


def followed_up(ctx: AppContext, session: Session, user: User, customer: Customer, now: datetime) -> Stamp | None:
    """A follow-up by `user` on `customer`: it ends the ladder (the lead has been contacted), and the
    owner's first one of this ownership is stamped.

    Following a lead up implies having opened it, so the owner's also opens it. A manager's or admin's
    follow-up on someone else's lead is not the owner's contact: it stamps nothing on their record.
    """
    if customer.owner_id != user.id:
        if customer.sla_next_at is not None:
            session.execute(
                update(Customer)
                .where(Customer.id == customer.id)
                .values(sla_next_at=None)
                .execution_options(synchronize_session=False)
            )
            set_committed_value(customer, "sla_next_at", None)
        return None
    open_leads(ctx, session, user, [customer.id], now)
    assigned = session.execute(
        update(ASSIGNMENTS)
        .where(
            ASSIGNMENTS.c.id == _current_ownership(customer.id),
            ASSIGNMENTS.c.to_user_id == user.id,
            ASSIGNMENTS.c.first_follow_up_at.is_(None),
        )
        .values(first_follow_up_at=now)
        .returning(ASSIGNMENTS.c.created_at)
    ).first()
    if assigned is None:
        return None
    stamp = Stamp(customer.id, user.team, (now - assigned.created_at).total_seconds())
    metrics = ctx.sla_metrics
    after_commit(session, lambda: metrics.followed_up(stamp.team, stamp.seconds))
    return stamp
