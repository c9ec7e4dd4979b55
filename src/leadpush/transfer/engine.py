"""One automatic-transfer run: warn owners of leads about to go, move leads whose deadline passed.

Runs never overlap (a lease row in the database, so this holds across processes and machines), and
each lead is handled in its own short transaction with a conditional update on its version, so a lead
moves once even if something else touches it meanwhile. A lead that cannot move (its target is full,
say) is recorded as failed and backs off: tried again after 10 minutes, then 20, 40, ... up to a day (or
exactly when the cooldown that stopped it ends). Only the first failure of such a streak is recorded in
the run history; the retries that fail again are silent. The run goes on.

Whom a lead goes to (`plan_move`): never back to the owner it was last taken from, nor to anyone who
lost it within the reclaim cooldown; and after LEADPUSH_TRANSFER_MAX_MOVES automatic moves from person
to person since it last left a pool, to the pool.

A run's row in the history is written when it starts, and its counts grow in the same transaction as
each move, warning or failure they count: whoever sees a lead moved sees it counted, even while the
run is still going (or after its process died mid-run).

Each person hears of a run once, when it ends: one notice for the leads they gained, one for those they lost
(`_tell_everyone`, read from the run's history rows; a run that died first is told for by the next one).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from leadpush.assignment.models import Assignment
from leadpush.assignment.service import Move, change_owner, notify_batch, open_lead_count
from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.db import rows_changed
from leadpush.leads.models import Customer
from leadpush.notify.ledger import write_notifications
from leadpush.notify.signals import deadlines_written
from leadpush.pools.cooldown import lost_since
from leadpush.pools.service import pool_for_owner
from leadpush.routing import hooks as routing
from leadpush.transfer.deadlines import backoff_applies, backoffs_for, deadline_for, enabled_rules, refresh_deadlines
from leadpush.transfer.messaging import max_moves_reason, transfer_reason, transfer_warning
from leadpush.transfer.models import Lease, TransferBackoff, TransferRule, TransferRun
from leadpush.users.models import User

log = logging.getLogger(__name__)

LEASE_NAME = "auto_transfer"
LEASE_SECONDS = 120
CHUNK = 500
# A lead that cannot move is tried again after FAILED_RETRY, then twice as long each time, up to BACKOFF_MAX.
FAILED_RETRY = timedelta(minutes=10)
BACKOFF_MAX = timedelta(days=1)
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

    @property
    def batch_id(self) -> str | None:
        """The history rows' batch of this run's moves, whose people are told once, when the run ends."""
        return run_batch_id(self.run_id) if self.run_id is not None else None

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


def run_batch_id(run_id: int) -> str:
    return f"transfer-run-{run_id}"


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


def pick_round_robin(
    session,  # noqa: ANN001
    rule: TransferRule,
    customer: Customer,
    owner: User | None,
    exclude: Collection[int] = (),
) -> User | None:
    """The next active salesperson of the rule's team after its cursor, with room, other than the owner and
    anyone in `exclude`."""
    team = rule.team or (owner.team if owner else None)
    if team is None:
        return None
    query = select(User).where(
        User.team == team, User.role == "sales", User.active.is_(True), User.id != customer.owner_id
    )
    if exclude:
        query = query.where(User.id.not_in(list(exclude)))
    candidates = list(session.scalars(query.order_by(User.id)))
    start = rule.last_assignee_id or 0
    ordered = [u for u in candidates if u.id > start] + [u for u in candidates if u.id <= start]
    for user in ordered:
        if user.capacity is None or open_lead_count(session, user.id) < user.capacity:
            return user
    return None


def previous_owner(session, customer: Customer) -> int | None:  # noqa: ANN001
    """Whom the current owner got the lead from (None if from a pool, or no history)."""
    last = session.execute(
        select(Assignment.from_user_id, Assignment.to_user_id)
        .where(Assignment.customer_id == customer.id)
        .order_by(Assignment.id.desc())
        .limit(1)
    ).first()
    return last.from_user_id if last is not None and last.to_user_id == customer.owner_id else None


def automatic_moves(session, customer_id: int) -> int:  # noqa: ANN001
    """How many times the automatic transfer moved the lead since it last left a pool."""
    left_pool = (
        select(func.coalesce(func.max(Assignment.id), 0))
        .where(
            Assignment.customer_id == customer_id,
            Assignment.from_user_id.is_(None),
            Assignment.to_user_id.is_not(None),
        )
        .scalar_subquery()
    )
    return (
        session.scalar(
            select(func.count())
            .select_from(Assignment)
            .where(
                Assignment.customer_id == customer_id,
                Assignment.via == "auto_transfer",
                Assignment.id > left_pool,
            )
        )
        or 0
    )


@dataclass
class Plan:
    """What moving one due lead under its rule means: to whom (None = the pool) and why, or why not."""

    possible: bool
    target: User | None
    reason: str
    # With a failure that ends at a known time (a cooldown), when to try again.
    retry_at: datetime | None = None


def plan_move(
    settings: Settings,
    session,  # noqa: ANN001
    rule: TransferRule,
    customer: Customer,
    owner: User | None,
    now: datetime,
) -> Plan:
    """Decide where `customer` goes under `rule` (reads only; the dry run and the rule preview use it too)."""
    if rule.action != "public_pool" and settings.transfer_max_moves > 0:
        moves = automatic_moves(session, customer.id)
        if moves >= settings.transfer_max_moves:
            return Plan(True, None, max_moves_reason(rule, moves))
    if rule.action == "public_pool":
        return Plan(True, None, transfer_reason(rule))
    cooldown = timedelta(hours=settings.reclaim_cooldown_hours)
    lost = lost_since(session, [customer.id], now - cooldown).get(customer.id, {}) if cooldown else {}
    if rule.action == "round_robin":
        exclude = set(lost)
        previous = previous_owner(session, customer)
        if previous is not None:
            exclude.add(previous)
        target = pick_round_robin(session, rule, customer, owner, exclude)
        if target is None:
            return Plan(
                False,
                None,
                "团队内没有可接收线索的销售（均已停用、达到上限、是当前负责人，或刚失去这条线索仍在冷却期内）",
            )
        return Plan(True, target, transfer_reason(rule))
    target = session.get(User, rule.target_user_id) if rule.target_user_id else None
    if target is None or not target.active:
        return Plan(False, None, "指定的接收人不存在或已停用")
    if target.id == customer.owner_id:
        return Plan(False, None, "指定的接收人就是当前负责人")
    if target.id in lost:
        free_at = lost[target.id] + cooldown
        return Plan(
            False,
            None,
            f"指定的接收人{target.name}刚失去这条线索，冷却期内不能再接收"
            f"（{free_at.astimezone(settings.tz):%m-%d %H:%M} 后再试）",
            retry_at=free_at,
        )
    return Plan(True, target, transfer_reason(rule))


def _move_one(ctx: AppContext, report: RunReport, customer_id: int, now: datetime) -> None:
    with ctx.db.write() as session:
        customer = session.get(Customer, customer_id)
        if customer is None or customer.owner_id is None:
            return
        owner = session.get(User, customer.owner_id)
        rules = enabled_rules(session)
        backoff = session.get(TransferBackoff, customer.id)
        deadline = deadline_for(rules, customer, owner.team if owner else None, backoff)
        if deadline is None or deadline.due_at > now:
            # Followed up (or the rule changed) since the deadline was stored: just refresh it.
            if not report.dry_run:
                refresh_deadlines(session, [customer], now, rules)
            return
        rule = deadline.rule
        team = owner.team if owner else None
        plan = plan_move(ctx.settings, session, rule, customer, owner, now)
        target = plan.target
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
        if not plan.possible:
            _failed(ctx, session, report, team, item, customer, backoff, plan.reason, now, plan.retry_at)
            return
        item["reason"] = plan.reason
        if report.dry_run:
            report.tally(team, "moved")
            if len(report.items) < PREVIEW_LIMIT:
                report.items.append(item)
            return
        result = change_owner(
            ctx,
            session,
            actor=None,
            moves=[Move(customer, target, expected_version=customer.version, to_pool=pool_for_owner(session, owner))],
            via="auto_transfer",
            reason=plan.reason,
            now=now,
            rules=rules,
            batch_id=report.batch_id,
            # Everyone hears once, when the run ends (`_tell_everyone`); outside a stored run, at once.
            notify=report.batch_id is None,
        )
        if result.failed:
            if result.failed[0].code == "version_conflict":  # someone else changed it: nothing to back off from
                report.fail(team, {**item, "reason": result.failed[0].message})
                _count(session, report, failed=1)
            else:
                _failed(ctx, session, report, team, item, customer, backoff, result.failed[0].message, now)
            return
        if target is None and result.changed:
            routing.route_returned_leads(
                ctx,
                session,
                result.changed,
                via="auto_transfer",
                batch_id=report.batch_id,
                notify=report.batch_id is None,
            )
        if rule.action == "round_robin" and target is not None:
            session.execute(update(TransferRule).where(TransferRule.id == rule.id).values(last_assignee_id=target.id))
        _count(session, report, moved=1)
        report.tally(team, "moved")
        if len(report.items) < PREVIEW_LIMIT:
            report.items.append(item)


def _failed(
    ctx: AppContext,
    session,  # noqa: ANN001
    report: RunReport,
    team: str | None,
    item: dict[str, Any],
    customer: Customer,
    backoff: TransferBackoff | None,
    why: str,
    now: datetime,
    retry_at: datetime | None = None,
) -> None:
    """A lead that could not move: back off, and count it in the run unless it is a repeat of its streak."""
    if report.dry_run:
        report.fail(team, {**item, "reason": why})
        return
    repeat = backoff_applies(backoff, customer)
    retry = back_off(session, customer, backoff, item.get("ruleId"), why, now, retry_at)
    if repeat:
        # Already in the history once for this streak: a silent retry, not counted as examined either.
        report.tally(team, "examined", -1)
        _count(session, report, examined=-1)
        return
    report.fail(team, {**item, "reason": why, "retryAt": retry.isoformat()})
    _count(session, report, failed=1)


def back_off(
    session,  # noqa: ANN001
    customer: Customer,
    backoff: TransferBackoff | None,
    rule_id: int | None,
    why: str,
    now: datetime,
    retry_at: datetime | None = None,
) -> datetime:
    """Store the lead's next try: `retry_at` when the failure ends at a known time, else FAILED_RETRY doubled
    for each failure in a row (up to BACKOFF_MAX). The stored deadline moves there without a new warning."""
    failures = backoff.failures + 1 if backoff is not None and backoff_applies(backoff, customer) else 1
    if retry_at is None or retry_at <= now:
        retry_at = now + min(FAILED_RETRY * 2 ** min(failures - 1, 16), BACKOFF_MAX)
    if backoff is None:
        backoff = TransferBackoff(customer_id=customer.id, first_failed_at=now)
        session.add(backoff)
    elif failures == 1:
        backoff.first_failed_at = now
    backoff.owner_id = customer.owner_id
    backoff.assigned_at = customer.assigned_at
    backoff.rule_id = rule_id
    backoff.failures = failures
    backoff.reason = why[:200]
    backoff.retry_at = retry_at
    session.flush()
    session.execute(
        update(Customer)
        .where(Customer.id == customer.id)
        .values(transfer_due_at=retry_at, transfer_warn_at=None)
        .execution_options(synchronize_session=False)
    )
    deadlines_written(session, [retry_at])
    return retry_at


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
                item = {"customerId": customer_id}
                why = f"内部错误：{type(exc).__name__}"
                if report.dry_run:
                    report.fail(owner_team, {**item, "reason": why})
                    continue
                with ctx.db.write() as session:
                    customer = session.get(Customer, customer_id)
                    if customer is not None:
                        backoff = session.get(TransferBackoff, customer_id)
                        _failed(ctx, session, report, owner_team, item, customer, backoff, why, now)


PREVIEW_SAMPLE = 20
CANDIDATE_ID = 2**31  # an unsaved rule sorts after every saved one, as it will once saved


@dataclass
class RulePreview:
    moved: int = 0
    warned: int = 0
    failed: int = 0
    graced: int = 0
    teams: dict[str, dict[str, int]] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)

    def tally(self, team: str | None, what: str) -> None:
        setattr(self, what, getattr(self, what) + 1)
        counts = self.teams.setdefault(team or "", {"moved": 0, "warned": 0, "failed": 0})
        counts[what] += 1


def preview_rule(settings: Settings, session, candidate: TransferRule, now: datetime) -> RulePreview:  # noqa: ANN001
    """What saving `candidate` (a new rule or a changed copy of a saved one, not in the session) would do at
    once: the leads it would move, fail to move, or warn right away, with the deadlines and plans of a run.

    Only leads that are not due already count: those would go at the next run whatever is saved. Reads
    only; a round robin's turns advance on the unsaved copy so the sample shows them in turn.
    """
    report = RulePreview()
    if candidate.id is None:
        candidate.id = CANDIDATE_ID
    rules = [r for r in enabled_rules(session) if r.id != candidate.id]
    if candidate.enabled:
        rules = sorted([*rules, candidate], key=lambda r: r.id)
    else:
        return report
    # No lead whose clock started later can be due (or warned) at once, graced or not.
    ahead = max(
        candidate.warn_before_hours or 0.0,
        ((candidate.grace_until - now).total_seconds() / 3600) if candidate.grace_until else 0.0,
    )
    horizon = now + timedelta(hours=ahead - candidate.threshold_hours)
    last_id = 0
    while True:
        query = (
            select(Customer, User)
            .join(User, User.id == Customer.owner_id)
            .where(Customer.id > last_id, Customer.assigned_at <= horizon)
            .order_by(Customer.id)
            .limit(CHUNK)
        )
        if candidate.team is not None:
            query = query.where(User.team == candidate.team)
        rows = session.execute(query).all()
        if not rows:
            return report
        last_id = rows[-1][0].id
        backoffs = backoffs_for(session, (c.id for c, _owner in rows))
        for customer, owner in rows:
            deadline = deadline_for(rules, customer, owner.team, backoffs.get(customer.id))
            if deadline is None or deadline.rule is not candidate:
                continue
            stored = customer.transfer_due_at
            if stored is not None and stored <= now:
                continue  # due already: not the save's doing
            if deadline.graced and deadline.due_at > now:
                report.graced += 1
            if deadline.due_at <= now:
                plan = plan_move(settings, session, candidate, customer, owner, now)
                outcome = "move" if plan.possible else "fail"
                report.tally(owner.team, "moved" if plan.possible else "failed")
                if plan.possible and plan.target is not None and candidate.action == "round_robin":
                    candidate.last_assignee_id = plan.target.id
            elif (
                deadline.warn_at is not None
                and deadline.warn_at <= now
                and customer.transfer_warned_for != deadline.due_at
            ):
                plan = Plan(True, None, "将收到流转预警")
                outcome = "warn"
                report.tally(owner.team, "warned")
            else:
                continue
            if len(report.items) < PREVIEW_SAMPLE:
                target = plan.target if outcome == "move" else None
                report.items.append(
                    {
                        "customerId": customer.id,
                        "customerName": customer.name,
                        "team": owner.team,
                        "fromUserId": owner.id,
                        "fromUserName": owner.name,
                        "toUserId": target.id if target else None,
                        "toUserName": target.name if target else None,
                        "dueAt": deadline.due_at,
                        "outcome": outcome,
                        "reason": plan.reason,
                    }
                )


def _tell_everyone(ctx: AppContext, session, run_id: int, now: datetime) -> None:  # noqa: ANN001
    """Notify each person of a run's moves once: one notice for the leads they gained, one for those they lost.

    Leads move in transactions of their own (a run must not hold the database for minutes) without telling
    anyone; their history rows, batched by the run, are the outbox this reads, in the transaction that
    closes the run. Seven leads to one person are one "您有 7 条新线索", not seven toasts and seven credits.
    """
    notify_batch(ctx, session, run_batch_id(run_id), "auto_transfer", now)


# How far back a run looks for runs that died before telling anyone of their moves.
UNTOLD_LOOKBACK = timedelta(days=1)


def _tell_for_dead_runs(ctx: AppContext, current: int, now: datetime) -> None:
    """Runs that died mid-way (their process killed: no `finished_at`) moved leads and told nobody. Holding the
    lease, this run is the only one going: tell those people now (notify_batch is idempotent), once."""
    with ctx.db.write() as session:
        dead = session.scalars(
            select(TransferRun).where(
                TransferRun.finished_at.is_(None),
                TransferRun.dry_run.is_(False),
                TransferRun.id != current,
                TransferRun.started_at >= now - UNTOLD_LOOKBACK,
            )
        ).all()
        for run in dead:
            if (run.details or {}).get("told"):
                continue
            notify_batch(ctx, session, run_batch_id(run.id), "auto_transfer", run.started_at)
            run.details = {**(run.details or {}), "told": True}


def tell_untold_runs(ctx: AppContext) -> int:
    """Tell the people of runs that died before telling anyone, without waiting for the next run; how many.

    The scheduler calls it every `UNTOLD_CHECK_SECONDS`. A run without `finished_at` may still be going: only
    one that started over a lease ago is looked at, and only under the transfer lease (which a live run
    holds and renews), so a run is never told for while it moves leads.
    """
    now = ctx.clock.now()
    with ctx.db.read() as session:
        untold = [
            run.id
            for run in session.scalars(
                select(TransferRun).where(
                    TransferRun.finished_at.is_(None),
                    TransferRun.dry_run.is_(False),
                    TransferRun.started_at >= now - UNTOLD_LOOKBACK,
                    TransferRun.started_at < now - timedelta(seconds=LEASE_SECONDS),
                )
            )
            if not (run.details or {}).get("told")
        ]
    if not untold:
        return 0
    holder = holder_id()
    if not acquire_lease(ctx, holder, now):
        return 0  # a run is going: it tells them itself
    try:
        _tell_for_dead_runs(ctx, -1, now)
    finally:
        release_lease(ctx, holder)
    log.warning("自动流转中断的运行已补发通知（%d 次运行）", len(untold))
    return len(untold)


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
        if not dry_run:
            _tell_for_dead_runs(ctx, run.id, now)
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
                if report.run_id is not None and not dry_run and report.moved:
                    _tell_everyone(ctx, session, report.run_id, now)
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
