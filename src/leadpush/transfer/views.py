"""HTTP routes for automatic transfer: rules, the manual trigger (with dry run), and run history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query
from sqlalchemy.orm import Session

from leadpush.deps import Ctx, StaffUser
from leadpush.schemas import Envelope
from leadpush.transfer import service
from leadpush.transfer.engine import RunReport
from leadpush.transfer.models import TransferRule
from leadpush.transfer.schemas import (
    RuleCreate,
    RuleFields,
    RuleOut,
    RulePreviewBody,
    RulePreviewOut,
    RunBody,
    RunOut,
    RunPage,
)
from leadpush.users.models import User

router = APIRouter(prefix="/api/auto-transfer", tags=["auto-transfer"])


def rule_out(session: Session, rule: TransferRule) -> RuleOut:
    target = session.get(User, rule.target_user_id) if rule.target_user_id else None
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
        target_user_name=target.name if target else None,
        warn_before_hours=rule.warn_before_hours,
        enabled=rule.enabled,
        created_at=rule.created_at,
        grace_until=rule.grace_until,
    )


@router.get("/rules", response_model=Envelope[list[RuleOut]])
def list_rules(ctx: Ctx, user: StaffUser) -> Envelope:
    with ctx.db.read() as session:
        return Envelope(data=[rule_out(session, r) for r in service.list_rules(session, user)])


@router.post("/rules", response_model=Envelope[RuleOut], status_code=201)
def create_rule(body: RuleCreate, ctx: Ctx, user: StaffUser, background: BackgroundTasks) -> Envelope:
    with ctx.db.write() as session:
        out = rule_out(session, service.create_rule(ctx, session, user, body))
    background.add_task(service.after_rules_changed, ctx)
    return Envelope(message="流转规则已创建", data=out)


@router.post("/rules/preview", response_model=Envelope[RulePreviewOut])
def preview_rule(body: RulePreviewBody, ctx: Ctx, user: StaffUser) -> Envelope:
    """What saving a rule would do at once: how many leads move, fail to move or are warned right away, by
    the owner's team, with a sample. The body is a rule as for create, or a PATCH's changes with the
    rule's `id`; with `graceHours`, as saved with that grace period. Nothing is written."""
    with ctx.db.read() as session:
        found = service.preview_rule(ctx, session, user, body)
    if found.moved:
        message = f"保存后将立即流转 {found.moved} 条线索"
    else:
        message = "保存后不会立即流转线索"
    return Envelope(message=message, data=found)


@router.patch("/rules/{rule_id:int}", response_model=Envelope[RuleOut])
def update_rule(rule_id: int, body: RuleFields, ctx: Ctx, user: StaffUser, background: BackgroundTasks) -> Envelope:
    with ctx.db.write() as session:
        out = rule_out(session, service.update_rule(ctx, session, user, rule_id, body))
    background.add_task(service.after_rules_changed, ctx)
    return Envelope(message="流转规则已更新", data=out)


@router.delete("/rules/{rule_id:int}", response_model=Envelope[RuleOut])
def delete_rule(rule_id: int, ctx: Ctx, user: StaffUser, background: BackgroundTasks) -> Envelope:
    with ctx.db.write() as session:
        rule = service.load_rule(session, user, rule_id)
        out = rule_out(session, rule)
        service.delete_rule(session, rule)
    background.add_task(service.after_rules_changed, ctx)
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
    report = service.run_manual(ctx, user, dry_run=dry_run)
    message = (
        f"演练：将流转 {report.moved} 条，预警 {report.warned} 条，无法流转 {report.failed} 条"
        if dry_run
        else f"已流转 {report.moved} 条，预警 {report.warned} 条，失败 {report.failed} 条"
    )
    return Envelope(message=message, data=report_out(report))


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
    with ctx.db.read() as session:
        items, total = service.list_runs(session, user, page, page_size)
    return Envelope(data=RunPage(items=items, total=total, page=page, page_size=page_size))
