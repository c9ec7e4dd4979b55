"""The first-contact ladder's steps, run by the scheduler role at each lead's exact `sla_next_at`.

Step 1 reminds the owner (`sla_reminder`), step 2 tells the owner's team managers (`sla_escalated`),
step 3 reassigns the lead (`change_owner(via="escalation")`) to the next person in the rotation or
returns it to the pool. Each lead's step runs in its own short transaction and is claimed by one
conditional UPDATE (its stage and owner as read), so across processes a step runs once and a lead
opened, followed up or moved meanwhile is left alone.

After downtime several steps may be due at once: only the latest due one runs (a reminder a minute
before the lead is taken away helps nobody), the earlier ones count as passed.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from leadpush.assignment.service import CLOSED_STATUSES, Move, change_owner
from leadpush.context import AppContext
from leadpush.db import after_commit, rows_changed
from leadpush.leads.models import Customer
from leadpush.notify.ledger import NewNotification, write_notifications
from leadpush.notify.signals import deadlines_written
from leadpush.perlead import run_due_per_lead
from leadpush.pools.service import pool_for_owner
from leadpush.routing.hooks import next_in_rotation, route_returned_leads
from leadpush.sla.models import STEPS, SlaRule
from leadpush.sla.progress import ASSIGNMENTS, next_step
from leadpush.users.models import User

log = logging.getLogger(__name__)

BATCH = 200
# A step that failed (a bug, a database hiccup) is tried again this much later, not at every look.
RETRY_SECONDS = 60


def earliest_step_query() -> Select[datetime | None]:
    return select(func.min(Customer.sla_next_at)).where(Customer.owner_id.is_not(None), Customer.opened_at.is_(None))


def earliest_step(session: Session) -> datetime | None:
    """The next moment a ladder step is due (None: no lead is waiting for one)."""
    return session.scalar(earliest_step_query())


def due_leads(session: Session, now: datetime, limit: int = BATCH) -> list[int]:
    return list(
        session.scalars(
            select(Customer.id)
            .where(Customer.sla_next_at <= now, Customer.owner_id.is_not(None), Customer.opened_at.is_(None))
            .order_by(Customer.sla_next_at, Customer.id)
            .limit(limit)
        )
    )


def run_due_steps(ctx: AppContext) -> int:
    """Run every ladder step due by now, each lead in its own transaction; returns how many ran."""
    return run_due_per_lead(ctx, due_leads, _ran_step, _retry_later, "首次联系升级步骤")


def _ran_step(ctx: AppContext, session: Session, customer_id: int, now: datetime) -> bool:
    return run_step(ctx, session, customer_id, now) is not None


def _retry_later(ctx: AppContext, customer_id: int, now: datetime) -> None:
    try:
        with ctx.db.write() as session:
            session.execute(
                update(Customer)
                .where(Customer.id == customer_id, Customer.sla_next_at <= now)
                .values(sla_next_at=now + timedelta(seconds=RETRY_SECONDS))
                .execution_options(synchronize_session=False)
            )
    except Exception:
        log.exception("推迟线索 %s 的首次联系升级步骤失败", customer_id)


def _lead_fields(ctx: AppContext, c: Customer) -> dict[str, object]:
    assigned = c.assigned_at.astimezone(ctx.settings.tz).isoformat(timespec="seconds") if c.assigned_at else None
    return {
        "customerId": c.id,
        "customerName": c.name,
        "customerPhone": c.phone,
        "source": c.source,
        "assignTime": assigned,
    }


def _ownership_id(session: Session, customer_id: int) -> int:
    return session.scalar(select(func.max(ASSIGNMENTS.c.id)).where(ASSIGNMENTS.c.customer_id == customer_id)) or 0


def run_step(ctx: AppContext, session: Session, customer_id: int, now: datetime) -> str | None:
    """Claim and run the step due for one lead; the step's name, or None if nothing was (still) due."""
    customer = session.get(Customer, customer_id)
    if (
        customer is None
        or customer.owner_id is None
        or customer.opened_at is not None
        or customer.sla_next_at is None
        or customer.sla_next_at > now
    ):
        return None
    assigned = customer.assigned_at
    rule = session.get(SlaRule, customer.sla_rule_id) if customer.sla_rule_id else None
    if rule is not None and (not rule.enabled or assigned is None or customer.status in CLOSED_STATUSES):
        rule = None  # switched off meanwhile, or the lead closed: the claim below only ends the ladder
    due = (
        [s for s, m in rule.step_minutes() if s > customer.sla_stage and assigned + timedelta(minutes=m) <= now]
        if rule is not None and assigned is not None
        else []
    )
    stage = due[-1] if due else customer.sla_stage
    following = next_step(rule, stage) if rule is not None else None
    next_at = assigned + timedelta(minutes=following[1]) if following and assigned is not None else None
    # The claim: only if the lead is still as read (same owner and ownership, same stage, not opened).
    claimed = session.execute(
        update(Customer)
        .where(
            Customer.id == customer.id,
            Customer.owner_id == customer.owner_id,
            Customer.assigned_at == assigned,
            Customer.sla_stage == customer.sla_stage,
            Customer.opened_at.is_(None),
        )
        .values(sla_stage=stage, sla_next_at=next_at)
        .execution_options(synchronize_session=False)
    )
    if not rows_changed(claimed):
        return None
    set_committed_value(customer, "sla_stage", stage)
    set_committed_value(customer, "sla_next_at", next_at)
    deadlines_written(session, [next_at])
    if not due or rule is None:
        return None  # the rule was switched off or changed: only the next step's time moved
    owner = session.get_one(User, customer.owner_id)
    name = STEPS[stage - 1]
    minutes = dict(rule.step_minutes())[stage]
    if name == "remind":
        _remind(ctx, session, customer, owner, rule, minutes, now)
    elif name == "manager":
        _tell_managers(ctx, session, customer, owner, rule, minutes, now)
    else:
        _reassign(ctx, session, customer, owner, rule, minutes, now)
    metrics = ctx.sla_metrics
    after_commit(session, lambda: metrics.step(name))
    return name


def _remind(
    ctx: AppContext, session: Session, c: Customer, owner: User, rule: SlaRule, minutes: int, now: datetime
) -> None:
    item = NewNotification(
        recipient=owner,
        kind="sla_reminder",
        title=f"请尽快联系线索「{c.name}」",
        body=f"线索「{c.name}」已分配 {minutes} 分钟仍未查看，请尽快联系",
        payload={**_lead_fields(ctx, c), "minutes": minutes, "ruleId": rule.id, "ruleName": rule.name},
        dedupe_key=f"sla_reminder:{c.id}:{_ownership_id(session, c.id)}",
    )
    write_notifications(session, ctx.settings, ctx.signals, [item], now)


def team_managers(session: Session, owner: User) -> list[User]:
    """Who hears that `owner` left a lead unopened: their team's managers, else (no team or no manager) the
    admins; never the owner themselves."""
    managers: list[User] = []
    if owner.team is not None:
        managers = list(
            session.scalars(
                select(User)
                .where(User.team == owner.team, User.role == "manager", User.active.is_(True), User.id != owner.id)
                .order_by(User.id)
            )
        )
    if not managers:
        managers = list(
            session.scalars(
                select(User).where(User.role == "admin", User.active.is_(True), User.id != owner.id).order_by(User.id)
            )
        )
    return managers


def _tell_managers(
    ctx: AppContext, session: Session, c: Customer, owner: User, rule: SlaRule, minutes: int, now: datetime
) -> None:
    ownership = _ownership_id(session, c.id)
    items = [
        NewNotification(
            recipient=manager,
            kind="sla_escalated",
            title=f"{owner.name} 的线索「{c.name}」{minutes} 分钟未查看",
            body=f"线索「{c.name}」分配给 {owner.name} 已 {minutes} 分钟仍未查看，请督促联系或改派",
            payload={
                **_lead_fields(ctx, c),
                "ownerId": owner.id,
                "ownerName": owner.name,
                "minutes": minutes,
                "ruleId": rule.id,
                "ruleName": rule.name,
            },
            dedupe_key=f"sla_escalated:{c.id}:{ownership}:{manager.id}",
        )
        for manager in team_managers(session, owner)
    ]
    write_notifications(session, ctx.settings, ctx.signals, items, now)


def _reassign(
    ctx: AppContext, session: Session, c: Customer, owner: User, rule: SlaRule, minutes: int, now: datetime
) -> None:
    target = (
        next_in_rotation(session, c, exclude={owner.id}, settings=ctx.settings, now=now)
        if rule.reassign_action == "next"
        else None
    )
    if target is not None:
        reason = f"{minutes} 分钟未查看，已改派（首次联系规则：{rule.name}）"
        result = change_owner(
            ctx, session, actor=None, moves=[Move(c, target, c.version)], via="escalation", reason=reason, now=now
        )
        if result.changed:
            return
        log.info("线索 %s 改派给 %s 失败（%s），退回线索池", c.id, target.id, result.failed)
    reason = f"{minutes} 分钟未查看，已退回线索池（首次联系规则：{rule.name}）"
    move = Move(c, None, c.version, to_pool=pool_for_owner(session, owner))
    result = change_owner(ctx, session, actor=None, moves=[move], via="escalation", reason=reason, now=now)
    if result.changed:
        route_returned_leads(ctx, session, result.changed, via="escalation")
