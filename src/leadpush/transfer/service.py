"""Automatic-transfer rules and runs as people manage them: who may see and change which, rule CRUD,
the manual run and its history.

A rule scoped to a team is its manager's (or an admin's); a company-wide one (team None) only an
admin's. A manager sees company-wide runs with only their team's share.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, false, func, or_, select, true
from sqlalchemy.orm import Session

from leadpush.context import AppContext
from leadpush.errors import ApiError, forbidden, not_found
from leadpush.notify.signals import Wake
from leadpush.permissions import check_can_assign, check_team_rule_scope, team_rules_visible
from leadpush.teams.service import require_team
from leadpush.transfer import engine
from leadpush.transfer.deadlines import recompute_all
from leadpush.transfer.engine import RunReport, TransferBusy, run_transfer
from leadpush.transfer.models import TransferBackoff, TransferRule, TransferRun
from leadpush.transfer.schemas import (
    PreviewItem,
    RuleCreate,
    RuleFields,
    RulePreviewBody,
    RulePreviewOut,
    RunOut,
    TeamCounts,
)
from leadpush.users.models import User


def check_rule_scope(user: User, team: str | None) -> None:
    """Creating, changing or deleting a rule of `team` (None = company-wide, admins only)."""
    check_team_rule_scope(user, team, "流转规则")


def rules_visible(user: User) -> ColumnElement[bool]:
    """SQL condition for the rules `user` may see: all (admins); company-wide ones and their team's (managers)."""
    return team_rules_visible(user, TransferRule.team)


def check_rule(session: Session, rule: TransferRule, actor: User, retargeted: bool = True) -> None:
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
    ctx.signals.notifications_committed(set(), wake=Wake(deliveries=False))  # the schedulers re-read


def list_rules(session: Session, user: User) -> list[TransferRule]:
    query = select(TransferRule).where(rules_visible(user)).order_by(TransferRule.id)
    return list(session.scalars(query))


def set_grace(rule: TransferRule, grace_hours: float | None, now: datetime) -> None:
    """Give the rule a grace period from `now` (None: leave it as it is; 0: take it away)."""
    if grace_hours is None:
        return
    if grace_hours <= 0:
        rule.grace_from = rule.grace_until = None
    else:
        rule.grace_from, rule.grace_until = now, now + timedelta(hours=grace_hours)


def new_rule(ctx: AppContext, session: Session, user: User, body: RuleFields) -> TransferRule:
    """A new rule from a create body, checked but not added to the session."""
    check_rule_scope(user, body.team)
    require_team(session, body.team)
    hours = body.hours()
    if body.name is None or body.condition is None or body.action is None or hours is None:
        raise ApiError(422, "invalid_rule", "新规则需要 name、condition、action 和 thresholdHours（或 thresholdDays）")
    rule = TransferRule(
        name=body.name,
        team=body.team,
        condition=body.condition,
        threshold_hours=hours,
        exempt_statuses=body.exempt_statuses if body.exempt_statuses is not None else ["won"],
        action=body.action,
        target_user_id=body.target_user_id,
        warn_before_hours=body.warn_before_hours,
        enabled=True if body.enabled is None else body.enabled,
        created_at=ctx.clock.now(),
    )
    set_grace(rule, body.grace_hours, ctx.clock.now())
    check_rule(session, rule, user)
    return rule


def create_rule(ctx: AppContext, session: Session, user: User, body: RuleCreate) -> TransferRule:
    rule = new_rule(ctx, session, user, body)
    session.add(rule)
    session.flush()
    return rule


def load_rule(session: Session, user: User, rule_id: int) -> TransferRule:
    """The rule `user` is about to change or delete: 404 if they cannot see it, 403 if they cannot manage it."""
    query = select(TransferRule).where(TransferRule.id == rule_id, rules_visible(user))
    rule = session.scalar(query) if 0 < rule_id < 2**31 else None
    if rule is None:
        raise not_found("rule")
    check_rule_scope(user, rule.team)
    return rule


# Fields a PATCH may not clear: null there means "leave as is".
NOT_CLEARABLE = ("name", "condition", "action", "enabled", "exempt_statuses")


def update_rule(ctx: AppContext, session: Session, user: User, rule_id: int, body: RuleFields) -> TransferRule:
    rule = load_rule(session, user, rule_id)
    apply_changes(ctx, session, user, rule, body)
    # Leads this rule could not move are tried again at once under the changed rule (a new streak: its
    # first failure is shown again).
    session.execute(delete(TransferBackoff).where(TransferBackoff.rule_id == rule.id))
    session.flush()
    return rule


def apply_changes(ctx: AppContext, session: Session, user: User, rule: TransferRule, body: RuleFields) -> None:
    """A PATCH body's changes on `rule` (the saved one, or an unsaved copy for a preview), checked."""
    changes = body.model_dump(exclude_unset=True, exclude={"id", "grace_hours"})
    if "team" in changes:
        check_rule_scope(user, changes["team"])
        require_team(session, changes["team"])
    hours = body.hours()
    changes.pop("threshold_days", None)
    changes.pop("threshold_hours", None)
    for key, value in changes.items():
        if value is None and key in NOT_CLEARABLE:
            continue
        setattr(rule, key, value)
    if hours is not None:
        rule.threshold_hours = hours
    set_grace(rule, body.grace_hours, ctx.clock.now())
    check_rule(session, rule, user, retargeted="action" in changes or "target_user_id" in changes)


def delete_rule(session: Session, rule: TransferRule) -> None:
    session.execute(delete(TransferBackoff).where(TransferBackoff.rule_id == rule.id))
    session.delete(rule)


RULE_COLUMNS = (
    "id",
    "name",
    "team",
    "condition",
    "threshold_hours",
    "exempt_statuses",
    "action",
    "target_user_id",
    "warn_before_hours",
    "enabled",
    "last_assignee_id",
    "created_at",
    "grace_from",
    "grace_until",
)


def preview_rule(ctx: AppContext, session: Session, user: User, body: RulePreviewBody) -> RulePreviewOut:
    """What saving this rule (new, or the given changes to rule `id`) would do at once; nothing is written.

    The same checks as saving it: who may preview a rule is who may save it.
    """
    if body.id is None:
        candidate = new_rule(ctx, session, user, body)
    else:
        saved = load_rule(session, user, body.id)
        # An unsaved copy: the preview must not change the rule in the session.
        candidate = TransferRule(**{name: copy.copy(getattr(saved, name)) for name in RULE_COLUMNS})
        apply_changes(ctx, session, user, candidate, body)
    now = ctx.clock.now()
    found = engine.preview_rule(ctx.settings, session, candidate, now)
    return RulePreviewOut(
        moved=found.moved,
        warned=found.warned,
        failed=found.failed,
        graced=found.graced,
        grace_until=candidate.grace_until,
        teams={team: TeamCounts(**counts) for team, counts in found.teams.items()},
        items=[PreviewItem.model_validate(item) for item in found.items],
    )


def run_manual(ctx: AppContext, user: User, *, dry_run: bool) -> RunReport:
    """Run the automatic transfer now: an admin's run covers everyone, a manager's their team."""
    team = user.team if user.role == "manager" else None
    if user.role == "manager" and team is None:
        raise forbidden("未分配团队的经理不能执行自动流转")
    try:
        return run_transfer(ctx, "manual", dry_run=dry_run, team=team)
    except TransferBusy as exc:
        raise ApiError(409, "transfer_running", "自动流转正在运行中，请稍后再试") from exc


def runs_visible(user: User) -> ColumnElement[bool]:
    """SQL condition for the runs `user` may see: all (admins); company-wide ones and their team's (managers)."""
    if user.role == "admin":
        return true()
    if user.team is None:
        return false()  # a manager without a team manages no team, so no run is theirs
    run_team = TransferRun.details["team"].as_string()
    return or_(run_team.is_(None), run_team == user.team)


def with_rule_names(failures: list[dict[str, Any]], names: dict[int, str]) -> list[dict[str, Any]]:
    """Each failure with its rule's current name, or `ruleDeleted` (the page says 已删除的规则 #id)."""
    out = []
    for failure in failures:
        rule_id = failure.get("ruleId")
        if isinstance(rule_id, int):
            failure = {**failure, "ruleName": names.get(rule_id), "ruleDeleted": rule_id not in names}
        out.append(failure)
    return out


def run_out(user: User, run: TransferRun, rule_names: dict[int, str] | None = None) -> RunOut:
    """A run as `user` may see it: a manager sees only their team's counts and leads of a company-wide run."""
    details: dict[str, Any] = run.details or {}
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
        failures=with_rule_names(failures, rule_names or {}),
        examined=counts["examined"],
        moved=counts["moved"],
        warned=counts["warned"],
        failed=counts["failed"],
    )


def list_runs(session: Session, user: User, page: int, page_size: int) -> tuple[list[RunOut], int]:
    """Run history, newest first, as `user` may see it (see `run_out`), and how many there are."""
    visible = runs_visible(user)
    total = session.scalar(select(func.count()).select_from(TransferRun).where(visible)) or 0
    rows = session.scalars(
        select(TransferRun)
        .where(visible)
        .order_by(TransferRun.id.desc())
        .offset((page - 1) * page_size)
        .limit(page_size)
    ).all()
    names = {rule_id: name for rule_id, name in session.execute(select(TransferRule.id, TransferRule.name))}
    return [run_out(user, r, names) for r in rows], total
