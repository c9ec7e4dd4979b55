"""HTTP routes for automatic transfer: rules, the manual trigger (with dry run), and run history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query
from sqlalchemy import ColumnElement, false, func, or_, select, true

from leadpush.context import AppContext
from leadpush.deps import Ctx, StaffUser
from leadpush.errors import ApiError, forbidden, not_found
from leadpush.permissions import check_can_assign, manages_team
from leadpush.schemas import Envelope
from leadpush.transfer.deadlines import recompute_all
from leadpush.transfer.engine import RunReport, TransferBusy, run_transfer
from leadpush.transfer.models import TransferRule, TransferRun
from leadpush.transfer.schemas import RuleCreate, RuleFields, RuleOut, RunBody, RunOut, RunPage
from leadpush.users.models import User

router = APIRouter(prefix="/api/auto-transfer", tags=["auto-transfer"])


def rule_out(rule: TransferRule) -> RuleOut:
    return RuleOut(
        id=rule.id,
        name=rule.name,
        team=rule.team,
        condition=rule.condition,
        threshold_hours=rule.threshold_hours,
        threshold_days=round(rule.threshold_hours / 24, 4),
        exempt_statuses=list(rule.exempt_statuses or []),
        action=rule.action,
        target_user_id=rule.target_user_id,
        warn_before_hours=rule.warn_before_hours,
        enabled=rule.enabled,
        created_at=rule.created_at,
    )


def check_rule_scope(user: User, team: str | None) -> None:
    """Creating, changing or deleting a rule of `team` (None = company-wide, admins only)."""
    if manages_team(user, team):
        return
    if user.team is None:
        raise forbidden("未分配团队的经理不能管理流转规则")
    if team is None:
        raise forbidden("只有管理员可以管理全公司的流转规则")
    raise forbidden("经理只能管理本团队的流转规则（team 必须是本团队）")


def rules_visible(user: User) -> ColumnElement[bool]:
    """SQL condition for the rules `user` may see: all (admins); company-wide ones and their team's (managers)."""
    if user.role == "admin":
        return true()
    if user.team is None:
        return TransferRule.team.is_(None)
    return or_(TransferRule.team.is_(None), TransferRule.team == user.team)


def check_rule(ctx: AppContext, session, rule: TransferRule, actor: User, retargeted: bool = True) -> None:  # noqa: ANN001
    """A rule must be complete, and whom it hands leads to must be someone `actor` may assign leads to.

    `retargeted` is False when an update leaves the action and target alone: a team's manager may still
    switch off or retune a rule an admin pointed outside the team.
    """
    if rule.action == "user":
        target = session.get(User, rule.target_user_id) if rule.target_user_id else None
        if target is None:
            raise ApiError(422, "invalid_rule", "action 为 user 时需要有效的 targetUserId")
        if retargeted:
            check_can_assign(actor, None, target)
    if rule.warn_before_hours and rule.warn_before_hours >= rule.threshold_hours:
        raise ApiError(422, "invalid_rule", "提前预警时间必须小于流转时限")


def after_rules_changed(ctx: AppContext) -> None:
    """Recompute every owned lead's deadline, then wake the scheduler to the new earliest one.

    Runs after the response is sent (a million leads take minutes); assignments meanwhile compute
    their own deadlines with the new rules.
    """
    recompute_all(ctx.db, ctx.clock.now())
    ctx.signals.notifications_committed(set())


@router.get("/rules", response_model=Envelope[list[RuleOut]])
def list_rules(ctx: Ctx, user: StaffUser) -> Envelope:
    query = select(TransferRule).where(rules_visible(user)).order_by(TransferRule.id)
    with ctx.db.read() as session:
        return Envelope(data=[rule_out(r) for r in session.scalars(query)])


@router.post("/rules", response_model=Envelope[RuleOut], status_code=201)
def create_rule(body: RuleCreate, ctx: Ctx, user: StaffUser, background: BackgroundTasks) -> Envelope:
    check_rule_scope(user, body.team)
    with ctx.db.write() as session:
        rule = TransferRule(
            name=body.name,
            team=body.team,
            condition=body.condition,
            threshold_hours=body.hours(),
            exempt_statuses=body.exempt_statuses if body.exempt_statuses is not None else ["won"],
            action=body.action,
            target_user_id=body.target_user_id,
            warn_before_hours=body.warn_before_hours,
            enabled=True if body.enabled is None else body.enabled,
            created_at=ctx.clock.now(),
        )
        check_rule(ctx, session, rule, user)
        session.add(rule)
        session.flush()
        out = rule_out(rule)
    background.add_task(after_rules_changed, ctx)
    return Envelope(message="流转规则已创建", data=out)


def _load_rule(session, user: User, rule_id: int) -> TransferRule:  # noqa: ANN001
    """The rule `user` is about to change or delete: 404 if they cannot see it, 403 if they cannot manage it."""
    query = select(TransferRule).where(TransferRule.id == rule_id, rules_visible(user))
    rule = session.scalar(query) if 0 < rule_id < 2**31 else None
    if rule is None:
        raise not_found("rule")
    check_rule_scope(user, rule.team)
    return rule


@router.patch("/rules/{rule_id:int}", response_model=Envelope[RuleOut])
def update_rule(rule_id: int, body: RuleFields, ctx: Ctx, user: StaffUser, background: BackgroundTasks) -> Envelope:
    changes = body.model_dump(exclude_unset=True)
    with ctx.db.write() as session:
        rule = _load_rule(session, user, rule_id)
        if "team" in changes:
            check_rule_scope(user, changes["team"])
        hours = body.hours()
        changes.pop("threshold_days", None)
        changes.pop("threshold_hours", None)
        for key, value in changes.items():
            if value is None and key in ("name", "condition", "action", "enabled", "exempt_statuses"):
                continue
            setattr(rule, key, value)
        if hours is not None:
            rule.threshold_hours = hours
        check_rule(ctx, session, rule, user, retargeted="action" in changes or "target_user_id" in changes)
        session.flush()
        out = rule_out(rule)
    background.add_task(after_rules_changed, ctx)
    return Envelope(message="流转规则已更新", data=out)


@router.delete("/rules/{rule_id:int}", response_model=Envelope[RuleOut])
def delete_rule(rule_id: int, ctx: Ctx, user: StaffUser, background: BackgroundTasks) -> Envelope:
    with ctx.db.write() as session:
        rule = _load_rule(session, user, rule_id)
        out = rule_out(rule)
        session.delete(rule)
    background.add_task(after_rules_changed, ctx)
    return Envelope(message="流转规则已删除", data=out)


def report_out(report: RunReport) -> RunOut:
    return RunOut(
        id=report.run_id,
        trigger=report.trigger,
        dry_run=report.dry_run,
        started_at=report.started_at,
        finished_at=report.finished_at,
        examined=report.examined,
        moved=report.moved,
        warned=report.warned,
        failed=report.failed,
        items=report.items,
        failures=report.failures,
    )


@router.post("/run", response_model=Envelope[RunOut])
def run_now(ctx: Ctx, user: StaffUser, body: RunBody | None = None) -> Envelope:
    """Run the automatic transfer now (a manager's run covers their team). `dryRun` moves nothing."""
    dry_run = bool(body and body.dry_run)
    team = user.team if user.role == "manager" else None
    if user.role == "manager" and team is None:
        raise forbidden("未分配团队的经理不能执行自动流转")
    try:
        report = run_transfer(ctx, "manual", dry_run=dry_run, team=team)
    except TransferBusy as exc:
        raise ApiError(409, "transfer_running", "自动流转正在运行中，请稍后再试") from exc
    message = (
        f"演练：将流转 {report.moved} 条，预警 {report.warned} 条，无法流转 {report.failed} 条"
        if dry_run
        else f"已流转 {report.moved} 条，预警 {report.warned} 条，失败 {report.failed} 条"
    )
    return Envelope(message=message, data=report_out(report))


def runs_visible(user: User) -> ColumnElement[bool]:
    """SQL condition for the runs `user` may see: all (admins); company-wide ones and their team's (managers)."""
    if user.role == "admin":
        return true()
    if user.team is None:
        return false()  # a manager without a team manages no team, so no run is theirs
    run_team = TransferRun.details["team"].as_string()
    return or_(run_team.is_(None), run_team == user.team)


def run_out(user: User, run: TransferRun) -> RunOut:
    """A run as `user` may see it: a manager sees only their team's counts and leads of a company-wide run."""
    details = run.details or {}
    counts = {"examined": run.examined, "moved": run.moved, "warned": run.warned, "failed": run.failed}
    failures = list(details.get("failures", []))
    if user.role != "admin":
        # Runs from before per-team counts (or still running) show the manager nothing rather than everything.
        own = (details.get("teams") or {}).get(user.team or "", {})
        counts = {key: int(own.get(key, 0)) for key in counts}
        failures = [f for f in failures if user.team is not None and f.get("team") == user.team]
    return RunOut(
        id=run.id,
        trigger=run.trigger,
        dry_run=run.dry_run,
        started_at=run.started_at,
        finished_at=run.finished_at,
        failures=failures,
        **counts,
    )


@router.get("/runs", response_model=Envelope[RunPage])
def list_runs(
    ctx: Ctx,
    user: StaffUser,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(alias="pageSize", ge=1, le=200)] = 20,
) -> Envelope:
    """Run history, newest first: trigger, start, end, and examined / moved / warned / failed.

    Admins see every run; a manager sees company-wide runs and their team's, each with only their team's
    share (counts and failed leads).
    """
    visible = runs_visible(user)
    with ctx.db.read() as session:
        total = session.scalar(select(func.count()).select_from(TransferRun).where(visible)) or 0
        rows = session.scalars(
            select(TransferRun)
            .where(visible)
            .order_by(TransferRun.id.desc())
            .offset((page - 1) * page_size)
            .limit(page_size)
        ).all()
        items = [run_out(user, r) for r in rows]
    return Envelope(data=RunPage(items=items, total=total, page=page, page_size=page_size))
