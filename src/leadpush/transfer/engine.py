"""One automatic-transfer run: warn owners of leads about to go, move leads whose deadline passed.

Runs never overlap (a lease row in the database, so this holds across processes and machines), and
each lead is handled in its own short transaction with a conditional update on its version, so a lead
moves once even if something else touches it meanwhile. A lead that cannot move (its target is full,
say) is recorded as failed and retried a little later; the run goes on.

A run's row in the history is written when it starts, and its counts grow in the same transaction as
each move, warning or failure they count: whoever sees a lead moved sees it counted, even while the
run is still going (or after its process died mid-run).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from leadpush.assignment.service import Move, change_owner, open_lead_count
from leadpush.context import AppContext
from leadpush.db import rows_changed
from leadpush.leads.models import Customer
from leadpush.notify.ledger import write_notifications
from leadpush.pools.service import pool_for_owner
from leadpush.routing import hooks as routing
from leadpush.transfer.deadlines import deadline_for, enabled_rules, refresh_deadlines
from leadpush.transfer.messaging import transfer_reason, transfer_warning
from leadpush.transfer.models import Lease, TransferRule, TransferRun
from leadpush.users.models import User

log = logging.getLogger(__name__)

LEASE_NAME = "auto_transfer"
LEASE_SECONDS = 120
CHUNK = 500
FAILED_RETRY = timedelta(minutes=10)
PREVIEW_LIMIT = 1000
FAILURES_KEPT = 100  # per team, in the run's history
COUNTS = ("examined", "moved", "warned", "failed")


class TransferBusy(Exception):
    """Another run holds the lease."""


@dataclass
class RunReport:
    run_id: int | None
    trigger: str
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None = None
    examined: int = 0
    moved: int = 0
    warned: int = 0
    failed: int = 0
    items: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    # The same counts per owner's team ("" = no team): a manager's view of a company-wide run.
    teams: dict[str, dict[str, int]] = field(default_factory=dict)

    def tally(self, team: str | None, what: str, n: int = 1) -> None:
        """Count toward the run's totals and toward the team of the lead's owner."""
        setattr(self, what, getattr(self, what) + n)
        counts = self.teams.setdefault(team or "", dict.fromkeys(COUNTS, 0))
        counts[what] += n

    def fail(self, team: str | None, failure: dict[str, Any]) -> None:
        self.tally(team, "failed")
        self.failures.append({**failure, "team": team})

    def kept_failures(self) -> list[dict[str, Any]]:
        """The failures the history keeps: the first few of each team, so no team's are crowded out."""
        seen: dict[str, int] = {}
        kept = []
        for failure in self.failures:
            key = failure.get("team") or ""
            if seen.get(key, 0) < FAILURES_KEPT:
                seen[key] = seen.get(key, 0) + 1
                kept.append(failure)
        return kept


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def acquire_lease(ctx: AppContext, holder: str, now: datetime) -> bool:
    until = now + timedelta(seconds=LEASE_SECONDS)
    with ctx.db.write() as session:
        taken = rows_changed(
            session.execute(
                update(Lease)
                .where(Lease.name == LEASE_NAME, or_(Lease.until < now, Lease.holder == holder))
                .values(holder=holder, until=until)
            )
        )
        if taken:
            return True
        if session.get(Lease, LEASE_NAME) is not None:
            return False
    try:
        with ctx.db.write() as session:
            session.execute(insert(Lease).values(name=LEASE_NAME, holder=holder, until=until))
        return True
    except IntegrityError:
        return False  # another process inserted it first


def release_lease(ctx: AppContext, holder: str) -> None:
    with ctx.db.write() as session:
        session.execute(delete(Lease).where(Lease.name == LEASE_NAME, Lease.holder == holder))


def _count(session, report: RunReport, **delta: int) -> None:  # noqa: ANN001
    """Add to the run's stored counts, in the caller's transaction (a dry run stores them only at its end)."""
    if report.run_id is None or report.dry_run:
        return
    columns = {name: getattr(TransferRun, name) + n for name, n in delta.items() if n}
    if columns:
        session.execute(
            update(TransferRun)
            .where(TransferRun.id == report.run_id)
            .values(**columns)
            .execution_options(synchronize_session=False)
        )


def _warn(ctx: AppContext, report: RunReport, now: datetime, team: str | None) -> None:
    last_id = 0
    while True:
        with ctx.db.write() as session:
            query = (
                select(Customer, User)
                .join(User, User.id == Customer.owner_id)
                .where(
                    Customer.id > last_id,
                    Customer.transfer_warn_at <= now,
                    Customer.transfer_due_at > now,
                    or_(
                        Customer.transfer_warned_for.is_(None), Customer.transfer_warned_for != Customer.transfer_due_at
                    ),
                )
                .order_by(Customer.id)
                .limit(CHUNK)
            )
            if team is not None:
                query = query.where(User.team == team)
            rows = session.execute(query).all()
            if not rows:
                return
            last_id = rows[-1][0].id
            if report.dry_run:
                for _customer, owner in rows:
                    report.tally(owner.team, "warned")
                continue
            rules = {r.id: r for r in enabled_rules(session)}
            items = []
            for customer, owner in rows:
                rule = rules.get(customer.transfer_rule_id or -1)
                due = customer.transfer_due_at
                assert due is not None
                items.append(transfer_warning(owner, customer, rule, due, now, ctx.settings.tz))
                session.execute(
                    update(Customer)
                    .where(Customer.id == customer.id, Customer.transfer_due_at == due)
                    .values(transfer_warned_for=due)
                    .execution_options(synchronize_session=False)
                )
            write_notifications(session, ctx.settings, ctx.signals, items, now)
            for _customer, owner in rows:
                report.tally(owner.team, "warned")
            _count(session, report, warned=len(items))


def pick_round_robin(session, rule: TransferRule, customer: Customer, owner: User | None) -> User | None:  # noqa: ANN001
    team = rule.team or (owner.team if owner else None)
    if team is None:
        return None
    candidates = list(
        session.scalars(
            select(User)
            .where(User.team == team, User.role == "sales", User.active.is_(True), User.id != customer.owner_id)
            .order_by(User.id)
        )
    )
    start = rule.last_assignee_id or 0
    ordered = [u for u in candidates if u.id > start] + [u for u in candidates if u.id <= start]
    for user in ordered:
        if user.capacity is None or open_lead_count(session, user.id) < user.capacity:
            return user
    return None


def _target_for(session, rule: TransferRule, customer: Customer, owner: User | None) -> tuple[bool, User | None, str]:  # noqa: ANN001
    """(possible, target, why-not) for moving `customer` under `rule`."""
    if rule.action == "public_pool":
        return True, None, ""
    if rule.action == "round_robin":
        target = pick_round_robin(session, rule, customer, owner)
        if target is None:
            return False, None, "团队内没有可接收线索的销售（均已停用、达到上限或只有当前负责人）"
        return True, target, ""
    target = session.get(User, rule.target_user_id) if rule.target_user_id else None
    if target is None or not target.active:
        return False, None, "指定的接收人不存在或已停用"
    if target.id == customer.owner_id:
        return False, None, "指定的接收人就是当前负责人"
    return True, target, ""


def _move_one(ctx: AppContext, report: RunReport, customer_id: int, now: datetime) -> None:
    with ctx.db.write() as session:
        customer = session.get(Customer, customer_id)
        if customer is None or customer.owner_id is None:
            return
        owner = session.get(User, customer.owner_id)
        rules = enabled_rules(session)
        deadline = deadline_for(rules, customer, owner.team if owner else None)
        if deadline is None or deadline.due_at > now:
            # Followed up (or the rule changed) since the deadline was stored: just refresh it.
            if not report.dry_run:
                refresh_deadlines(session, [customer], now, rules)
            return
        rule = deadline.rule
        team = owner.team if owner else None
        possible, target, why = _target_for(session, rule, customer, owner)
        item = {
            "customerId": customer.id,
            "customerName": customer.name,
            "fromUserId": customer.owner_id,
            "fromUserName": owner.name if owner else None,
            "toUserId": target.id if target else None,
            "toUserName": target.name if target else None,
            "ruleId": rule.id,
            "ruleName": rule.name,
            "action": rule.action,
            "dueAt": deadline.due_at.isoformat(),
        }
        if not possible:
            report.fail(team, {**item, "reason": why})
            if not report.dry_run:
                _postpone(session, customer.id, now)
                _count(session, report, failed=1)
            return
        if report.dry_run:
            report.tally(team, "moved")
            if len(report.items) < PREVIEW_LIMIT:
                report.items.append(item)
            return
        reason = transfer_reason(rule)
        result = change_owner(
            ctx,
            session,
            actor=None,
            moves=[Move(customer, target, expected_version=customer.version, to_pool=pool_for_owner(session, owner))],
            via="auto_transfer",
            reason=reason,
            now=now,
            rules=rules,
        )
        if result.failed:
            report.fail(team, {**item, "reason": result.failed[0].message})
            if result.failed[0].code != "version_conflict":
                _postpone(session, customer.id, now)
            _count(session, report, failed=1)
            return
        if target is None and result.changed:
            routing.route_returned_leads(ctx, session, result.changed, via="auto_transfer")
        if rule.action == "round_robin" and target is not None:
            session.execute(update(TransferRule).where(TransferRule.id == rule.id).values(last_assignee_id=target.id))
        _count(session, report, moved=1)
        report.tally(team, "moved")
        if len(report.items) < PREVIEW_LIMIT:
            report.items.append(item)


def _postpone(session, customer_id: int, now: datetime) -> None:  # noqa: ANN001
    session.execute(
        update(Customer)
        .where(Customer.id == customer_id)
        .values(transfer_due_at=now + FAILED_RETRY)
        .execution_options(synchronize_session=False)
    )


def _move_due(ctx: AppContext, report: RunReport, now: datetime, team: str | None, holder: str) -> None:
    last_id = 0
    while True:
        with ctx.db.read() as session:
            query = (
                select(Customer.id, User.team)
                .join(User, User.id == Customer.owner_id)
                .where(Customer.id > last_id, Customer.transfer_due_at <= now)
                .order_by(Customer.id)
                .limit(CHUNK)
            )
            if team is not None:
                query = query.where(User.team == team)
            rows = session.execute(query).all()
        if not rows:
            return
        last_id = rows[-1][0]
        for _customer_id, owner_team in rows:
            report.tally(owner_team, "examined")
        if not acquire_lease(ctx, holder, ctx.clock.now()):  # renew; lost only if we stalled past the lease
            raise TransferBusy()
        with ctx.db.write() as session:
            _count(session, report, examined=len(rows))
        for customer_id, owner_team in rows:
            try:
                _move_one(ctx, report, customer_id, now)
            except Exception as exc:  # noqa: BLE001 - one lead's failure must not stop the run
                log.exception("自动流转线索 %s 失败", customer_id)
                report.fail(owner_team, {"customerId": customer_id, "reason": f"内部错误：{type(exc).__name__}"})
                if not report.dry_run:
                    with ctx.db.write() as session:
                        _postpone(session, customer_id, now)
                        _count(session, report, failed=1)


def run_transfer(ctx: AppContext, trigger: str, *, dry_run: bool = False, team: str | None = None) -> RunReport:
    """Run once. Raises TransferBusy if another run (in any process) is in progress."""
    now = ctx.clock.now()
    holder = holder_id()
    if not acquire_lease(ctx, holder, now):
        raise TransferBusy()
    report = RunReport(run_id=None, trigger=trigger, dry_run=dry_run, started_at=now)
    completed = False
    try:
        with ctx.db.write() as session:
            run = TransferRun(trigger=trigger, dry_run=dry_run, started_at=now, details={"team": team})
            session.add(run)
            session.flush()
            report.run_id = run.id
        _warn(ctx, report, now, team)
        _move_due(ctx, report, now, team, holder)
        completed = True
    finally:
        report.finished_at = ctx.clock.now()
        idle = not (report.examined or report.warned or report.moved or report.failed)
        # Woken for a deadline that someone else handled meanwhile: nothing worth keeping in the history.
        forget = completed and trigger == "deadline" and idle
        try:
            with ctx.db.write() as session:
                if forget:
                    session.execute(delete(TransferRun).where(TransferRun.id == report.run_id))
                else:
                    session.execute(
                        update(TransferRun)
                        .where(TransferRun.id == report.run_id)
                        .values(
                            finished_at=report.finished_at,
                            examined=report.examined,
                            moved=report.moved,
                            warned=report.warned,
                            failed=report.failed,
                            details={"team": team, "failures": report.kept_failures(), "teams": report.teams},
                        )
                    )
        finally:
            release_lease(ctx, holder)
    if forget:
        report.run_id = None
    log.info(
        "自动流转（%s%s）：检查 %d，流转 %d，预警 %d，失败 %d",
        trigger,
        "，演练" if dry_run else "",
        report.examined,
        report.moved,
        report.warned,
        report.failed,
    )
    return report
