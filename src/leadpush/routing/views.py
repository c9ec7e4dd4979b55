"""HTTP routes for distribution rules (CRUD, order, dry run) and people's availability."""

from __future__ import annotations

from fastapi import APIRouter

from leadpush.deps import Ctx, CurrentUser, StaffUser
from leadpush.routing import service
from leadpush.routing.schemas import (
    AvailabilityIn,
    AvailabilityOut,
    DistributionDryRunBody,
    DistributionDryRunOut,
    DistributionReorderBody,
    DistributionRuleCreate,
    DistributionRuleFields,
    DistributionRuleOut,
)
from leadpush.schemas import Envelope

router = APIRouter(prefix="/api", tags=["distribution-rules"])


@router.get("/distribution-rules", response_model=Envelope[list[DistributionRuleOut]])
def list_rules(ctx: Ctx, user: StaffUser) -> Envelope:
    """The rules in evaluation order (admins: all; managers: company-wide ones and their team's)."""
    with ctx.db.read() as session:
        return Envelope(data=[service.rule_out(session, r) for r in service.list_rules(session, user)])


@router.post("/distribution-rules", response_model=Envelope[DistributionRuleOut], status_code=201)
def create_rule(body: DistributionRuleCreate, ctx: Ctx, user: StaffUser) -> Envelope:
    """A new rule, last in order unless `position` is given."""
    with ctx.db.write() as session:
        out = service.rule_out(session, service.create_rule(session, user, body, ctx.clock.now()))
    return Envelope(message="分配规则已创建", data=out)


@router.post("/distribution-rules/reorder", response_model=Envelope[list[DistributionRuleOut]])
def reorder_rules(body: DistributionReorderBody, ctx: Ctx, user: StaffUser) -> Envelope:
    """Put the given rules in this evaluation order (among the places they hold)."""
    with ctx.db.write() as session:
        out = [service.rule_out(session, r) for r in service.reorder(session, user, body.rule_ids)]
    return Envelope(message="规则顺序已更新", data=out)


@router.post("/distribution-rules/dry-run", response_model=Envelope[DistributionDryRunOut])
def dry_run(body: DistributionDryRunBody, ctx: Ctx, user: StaffUser) -> Envelope:
    """Who would get a lead like this now, and why each other candidate was passed over; changes nothing."""
    with ctx.db.read() as session:
        out = service.dry_run(session, ctx.settings, user, body, ctx.clock.now())
    return Envelope(message=out.summary, data=out)


@router.get("/distribution-rules/{rule_id:int}", response_model=Envelope[DistributionRuleOut])
def get_rule(rule_id: int, ctx: Ctx, user: StaffUser) -> Envelope:
    with ctx.db.read() as session:
        return Envelope(data=service.rule_out(session, service.load_rule(session, user, rule_id, manage=False)))


@router.patch("/distribution-rules/{rule_id:int}", response_model=Envelope[DistributionRuleOut])
def update_rule(rule_id: int, body: DistributionRuleFields, ctx: Ctx, user: StaffUser) -> Envelope:
    """Change some fields; `members` given replaces the members."""
    with ctx.db.write() as session:
        out = service.rule_out(session, service.update_rule(session, user, rule_id, body, ctx.clock.now()))
    return Envelope(message="分配规则已更新", data=out)


@router.delete("/distribution-rules/{rule_id:int}", response_model=Envelope[DistributionRuleOut])
def delete_rule(rule_id: int, ctx: Ctx, user: StaffUser) -> Envelope:
    with ctx.db.write() as session:
        rule = service.load_rule(session, user, rule_id)
        out = service.rule_out(session, rule)
        service.delete_rule(session, rule)
    return Envelope(message="分配规则已删除", data=out)


@router.get("/users/{user_id:int}/availability", response_model=Envelope[AvailabilityOut], tags=["users"])
def get_availability(user_id: int, ctx: Ctx, user: CurrentUser) -> Envelope:
    """When this person takes routed leads (themselves, their manager, admins)."""
    with ctx.db.read() as session:
        target = service.availability_user(session, user, user_id)
        return Envelope(data=service.availability_out(session, ctx.settings, target, ctx.clock.now()))


@router.put("/users/{user_id:int}/availability", response_model=Envelope[AvailabilityOut], tags=["users"])
def put_availability(user_id: int, body: AvailabilityIn, ctx: Ctx, user: CurrentUser) -> Envelope:
    """Set working hours (null = always) and leave; routing skips people off hours or on leave."""
    with ctx.db.write() as session:
        target = service.availability_user(session, user, user_id)
        service.set_availability(session, target, body, ctx.clock.now())
        out = service.availability_out(session, ctx.settings, target, ctx.clock.now())
    return Envelope(message="工作时间已保存", data=out)
