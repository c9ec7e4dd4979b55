"""HTTP routes for first-contact SLA rules and the speed-to-lead report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from leadpush.deps import Ctx, CurrentUser, StaffUser
from leadpush.errors import ApiError
from leadpush.notify.signals import Wake
from leadpush.schemas import Envelope
from leadpush.sla import service
from leadpush.sla.models import SlaRule
from leadpush.sla.schemas import GroupBy, SlaRuleCreate, SlaRuleFields, SlaRuleOut, SpeedReport

router = APIRouter(tags=["first-contact"])


def rule_out(rule: SlaRule) -> SlaRuleOut:
    return SlaRuleOut.model_validate(rule)


@router.get("/api/sla-rules", response_model=Envelope[list[SlaRuleOut]])
def list_rules(ctx: Ctx, user: StaffUser) -> Envelope:
    """First-contact rules the caller may see (admins: all; managers: company-wide ones and their team's)."""
    with ctx.db.read() as session:
        return Envelope(data=[rule_out(r) for r in service.list_rules(session, user)])


@router.post("/api/sla-rules", response_model=Envelope[SlaRuleOut], status_code=201)
def create_rule(body: SlaRuleCreate, ctx: Ctx, user: StaffUser) -> Envelope:
    """A rule for leads assigned from now on: remind at N, tell the managers at M, reassign at K minutes."""
    with ctx.db.write() as session:
        out = rule_out(service.create_rule(ctx, session, user, body))
    return Envelope(message="首次联系规则已创建", data=out)


@router.patch("/api/sla-rules/{rule_id:int}", response_model=Envelope[SlaRuleOut])
def update_rule(rule_id: int, body: SlaRuleFields, ctx: Ctx, user: StaffUser) -> Envelope:
    with ctx.db.write() as session:
        out = rule_out(service.update_rule(session, user, rule_id, body))
    ctx.signals.notifications_committed(set(), wake=Wake(deliveries=False))  # the scheduler re-reads the earliest step
    return Envelope(message="首次联系规则已更新", data=out)


@router.delete("/api/sla-rules/{rule_id:int}", response_model=Envelope[SlaRuleOut])
def delete_rule(rule_id: int, ctx: Ctx, user: StaffUser) -> Envelope:
    with ctx.db.write() as session:
        rule = service.load_rule(session, user, rule_id)
        out = rule_out(rule)
        service.delete_rule(session, rule)
    return Envelope(message="首次联系规则已删除", data=out)


def _aware(value: datetime | None, label: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ApiError(422, "invalid_range", f"{label} 需要带时区，如 2026-12-01T00:00:00+08:00")
    return value.astimezone(UTC)


@router.get("/api/reports/speed-to-lead", response_model=Envelope[SpeedReport])
def speed_to_lead(
    ctx: Ctx,
    user: CurrentUser,
    start: Annotated[datetime | None, Query(alias="from", description="开始（含），默认 7 天前")] = None,
    end: Annotated[datetime | None, Query(alias="to", description="结束（不含），默认现在")] = None,
    group_by: Annotated[GroupBy, Query(alias="groupBy")] = "person",
) -> Envelope:
    """Time to open and to first follow-up of the assignments in [from, to), per person or team.

    Admins see everyone, managers their team, salespeople only themselves.
    """
    to = _aware(end, "to") or ctx.clock.now()
    since = _aware(start, "from") or to - timedelta(days=7)
    with ctx.db.read() as session:
        report = service.speed_to_lead(session, user, since, to, group_by)
    return Envelope(data=report)
