"""First-contact SLA rules as people manage them (who may see and change which), and the speed-to-lead report.

A rule scoped to a team is its manager's (or an admin's); a company-wide one (team None) only an admin's
— the same scope as automatic-transfer rules. A rule applies to leads assigned after it is saved; a
change of its times (or switching it off, or deleting it) reschedules the ladders it runs now.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, exists, or_, select
from sqlalchemy.orm import Session, aliased

from leadpush.assignment.models import Assignment
from leadpush.context import AppContext
from leadpush.errors import ApiError
from leadpush.leads.models import Customer
from leadpush.permissions import check_team_rule_scope, team_members, team_rules_visible
from leadpush.sla.models import SlaRule
from leadpush.sla.progress import next_step
from leadpush.sla.schemas import GroupBy, SlaRuleCreate, SlaRuleFields, SpeedReport, SpeedRow
from leadpush.teams.service import require_team
from leadpush.users.models import User


def check_rule_scope(user: User, team: str | None) -> None:
    """Creating, changing or deleting a rule of `team` (None = company-wide, admins only)."""
    check_team_rule_scope(user, team, "首次联系规则")


def rules_visible(user: User) -> ColumnElement[bool]:
    """SQL condition for the rules `user` may see: all (admins); company-wide ones and their team's (managers)."""
    return team_rules_visible(user, SlaRule.team)


def check_rule(rule: SlaRule) -> None:
    steps = [m for m in (rule.remind_after_minutes, rule.manager_after_minutes, rule.reassign_after_minutes) if m]
    if not steps:
        raise ApiError(422, "invalid_rule", "提醒、通知经理、改派至少要设置一个时间")
    if any(a >= b for a, b in zip(steps, steps[1:], strict=False)):
        raise ApiError(422, "invalid_rule", "时间必须依次增加：提醒 N < 通知经理 M < 改派 K")


def list_rules(session: Session, user: User) -> list[SlaRule]:
    return list(session.scalars(select(SlaRule).where(rules_visible(user)).order_by(SlaRule.id)))


def create_rule(ctx: AppContext, session: Session, user: User, body: SlaRuleCreate) -> SlaRule:
    check_rule_scope(user, body.team)
    require_team(session, body.team)
    rule = SlaRule(
        name=body.name,
        team=body.team,
        sources=body.sources or [],
        remind_after_minutes=body.remind_after_minutes,
        manager_after_minutes=body.manager_after_minutes,
        reassign_after_minutes=body.reassign_after_minutes,
        reassign_action=body.reassign_action,
        enabled=True if body.enabled is None else body.enabled,
        created_at=ctx.clock.now(),
    )
    check_rule(rule)
    session.add(rule)
    session.flush()
    return rule


def load_rule(session: Session, user: User, rule_id: int) -> SlaRule:
    """The rule `user` is about to change or delete: 404 if they cannot see it, 403 if they cannot manage it."""
    rule = (
        session.scalar(select(SlaRule).where(SlaRule.id == rule_id, rules_visible(user)))
        if 0 < rule_id < 2**31
        else None
    )
    if rule is None:
        raise ApiError(404, "rule_not_found", "首次联系规则不存在")
    check_rule_scope(user, rule.team)
    return rule


NOT_CLEARABLE = ("name", "enabled", "sources", "reassign_action")


def update_rule(session: Session, user: User, rule_id: int, body: SlaRuleFields) -> SlaRule:
    changes = body.model_dump(exclude_unset=True)
    rule = load_rule(session, user, rule_id)
    if "team" in changes:
        check_rule_scope(user, changes["team"])
        require_team(session, changes["team"])
    for key, value in changes.items():
        if value is None and key in NOT_CLEARABLE:
            continue
        setattr(rule, key, value)
    check_rule(rule)
    session.flush()
    reschedule(session, rule.id, rule if rule.enabled else None)
    return rule


def delete_rule(session: Session, rule: SlaRule) -> None:
    reschedule(session, rule.id, None)
    session.delete(rule)


def reschedule(session: Session, rule_id: int, rule: SlaRule | None) -> None:
    """The ladders `rule_id` runs now, after it changed: each lead's next step by the rule's new times
    (from the steps not yet done), or none when the rule is off or gone."""
    leads = session.scalars(
        select(Customer).where(
            Customer.sla_rule_id == rule_id, Customer.sla_next_at.is_not(None), Customer.opened_at.is_(None)
        )
    ).all()
    for lead in leads:
        step = next_step(rule, lead.sla_stage) if rule is not None else None
        lead.sla_next_at = lead.assigned_at + timedelta(minutes=step[1]) if step and lead.assigned_at else None
    session.flush()


# The speed-to-lead report


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile (share 0.5 = the median) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass
class Group:
    key: str
    name: str
    team: str | None
    assignments: int = 0
    opened: list[float] = field(default_factory=list)
    followed: list[float] = field(default_factory=list)
    with_sla: int = 0
    within_sla: int = 0
    unopened: int = 0

    def row(self) -> SpeedRow:
        return SpeedRow(
            key=self.key,
            name=self.name,
            team=self.team,
            assignments=self.assignments,
            opened=len(self.opened),
            median_open_seconds=percentile(self.opened, 0.5),
            p90_open_seconds=percentile(self.opened, 0.9),
            median_follow_up_seconds=percentile(self.followed, 0.5),
            followed_up=len(self.followed),
            with_sla=self.with_sla,
            opened_within_sla=self.within_sla,
            opened_within_sla_share=round(self.within_sla / self.with_sla, 4) if self.with_sla else None,
            unopened=self.unopened,
        )


MAX_SPAN = timedelta(days=366)


def speed_to_lead(session: Session, actor: User, start: datetime, end: datetime, group_by: GroupBy) -> SpeedReport:
    """Assignments to people in [start, end) and how fast each was opened and followed up, per person or team.

    Admins see everyone, managers their team, salespeople themselves. "Unopened" counts the assignments
    not opened whose lead is still with that person (the current ownership). Leads people took themselves
    (claims) are left out: they were opened as they were taken.
    """
    if end <= start:
        raise ApiError(422, "invalid_range", "结束时间必须晚于开始时间")
    if end - start > MAX_SPAN:
        raise ApiError(422, "invalid_range", "时间范围不能超过一年")
    later = aliased(Assignment)
    current = ~exists().where(later.customer_id == Assignment.customer_id, later.id > Assignment.id)
    query = (
        select(
            Assignment.to_user_id,
            Assignment.created_at,
            Assignment.opened_at,
            Assignment.first_follow_up_at,
            Assignment.open_due_at,
            current.label("current"),
            User.name,
            User.team,
        )
        .join(User, User.id == Assignment.to_user_id)
        .where(Assignment.created_at >= start, Assignment.created_at < end)
        # Leads given to someone, not taken by them (a claim, a manager taking one): those were seen at once.
        .where(or_(Assignment.actor_id.is_(None), Assignment.actor_id != Assignment.to_user_id))
    )
    if actor.role == "manager":
        query = query.where(team_members(actor))
    elif actor.role != "admin":
        query = query.where(Assignment.to_user_id == actor.id)
    groups: dict[str, Group] = {}
    total = Group("", "合计", None)
    for uid, created, opened, followed, due, still_theirs, name, team in session.execute(query):
        key = str(uid) if group_by == "person" else (team or "")
        group = groups.get(key)
        if group is None:
            label = name if group_by == "person" else (team or "未分组")
            group = groups[key] = Group(key, label, team)
        for g in (group, total):
            g.assignments += 1
            if opened is not None:
                g.opened.append((opened - created).total_seconds())
            elif still_theirs:
                g.unopened += 1
            if followed is not None:
                g.followed.append((followed - created).total_seconds())
            if due is not None:
                g.with_sla += 1
                g.within_sla += opened is not None and opened <= due
    rows = sorted(groups.values(), key=lambda g: (-g.assignments, g.name))
    return SpeedReport.model_validate(
        {"groupBy": group_by, "from": start, "to": end, "rows": [g.row() for g in rows], "total": total.row()}
    )
