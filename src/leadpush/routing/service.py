"""Distribution rules and availability as people manage them: who may see and change which rule, rule CRUD
and order, the dry run ("who would get this lead"), and each person's working hours and leave.

A rule scoped to a team is its manager's (or an admin's); a company-wide one (team None) only an admin's —
as for transfer rules (`transfer.service.check_rule_scope`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

from leadpush.config import Settings
from leadpush.errors import ApiError, forbidden
from leadpush.permissions import check_can_assign, check_team_rule_scope, same_team, team_rules_visible
from leadpush.pools.models import Pool
from leadpush.routing.engine import SKIP_TEXT, Lead, Router, enabled_rules, first_match, standing_reason
from leadpush.routing.models import DistributionMember, DistributionRule, UserAvailability
from leadpush.routing.schemas import (
    AvailabilityIn,
    AvailabilityOut,
    DistributionCandidateOut,
    DistributionDryRunBody,
    DistributionDryRunOut,
    DistributionMemberOut,
    DistributionRuleCreate,
    DistributionRuleFields,
    DistributionRuleOut,
)
from leadpush.teams.service import require_team
from leadpush.users.models import User
from leadpush.users.service import existing_user, is_db_id, users_by_id


def check_rule_scope(user: User, team: str | None) -> None:
    """Creating, changing or deleting a rule of `team` (None = company-wide, admins only)."""
    check_team_rule_scope(user, team, "分配规则")


def rules_visible(user: User) -> ColumnElement[bool]:
    """SQL condition for the rules `user` may see: all (admins); company-wide ones and their team's (managers)."""
    return team_rules_visible(user, DistributionRule.team)


def invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_rule", message)


def _assignable(session: Session, actor: User, user_id: int | None, what: str) -> User:
    target = session.get(User, user_id) if is_db_id(user_id) else None
    if target is None:
        raise ApiError(422, "user_not_found", f"{what}（用户 {user_id}）不存在")
    check_can_assign(actor, None, target)
    return target


def _pool(session: Session, actor: User, rule_team: str | None, pool_id: int | None) -> None:
    if pool_id is None:
        return
    pool = session.get(Pool, pool_id) if is_db_id(pool_id) else None
    if pool is None:
        raise ApiError(422, "pool_not_found", f"公海 {pool_id} 不存在")
    if actor.role != "admin" and pool.team is not None and pool.team != rule_team:
        raise forbidden("只能把线索放入本团队或全公司的公海")


def check_rule(
    session: Session, actor: User, rule: DistributionRule, members: list[tuple[int, int]], changed: set[str]
) -> None:
    """A rule must be complete, and everyone it hands leads to someone `actor` may assign leads to.

    Only what this request changes is checked against the actor: a team's manager may still switch off or
    reorder a rule an admin pointed elsewhere.
    """
    if rule.action == "user":
        if rule.target_user_id is None:
            raise invalid("action 为 user 时需要 targetUserId")
        if changed & {"action", "target_user_id"}:
            _assignable(session, actor, rule.target_user_id, "接收人")
    if rule.action == "pool" and changed & {"action", "target_pool_id"}:
        _pool(session, actor, rule.team, rule.target_pool_id)
    if rule.action == "weighted" and not members:
        raise invalid("按权重轮流需要至少一名成员")
    if rule.action in ("round_robin", "least_loaded") and not members and rule.team is None:
        raise invalid("全公司的规则需要指定成员（团队规则不指定成员时在团队销售中轮流）")
    if "members" in changed:
        for user_id, _weight in members:
            member = _assignable(session, actor, user_id, "成员")
            if rule.team is not None and member.team != rule.team:
                raise invalid(f"成员 {member.name} 不属于 {rule.team} 组")
    if rule.fallback == "user":
        if rule.fallback_user_id is None:
            raise invalid("兜底方式为 user 时需要 fallbackUserId")
        if changed & {"fallback", "fallback_user_id"}:
            _assignable(session, actor, rule.fallback_user_id, "兜底接收人")
    elif changed & {"fallback", "fallback_pool_id"}:
        _pool(session, actor, rule.team, rule.fallback_pool_id)


def list_rules(session: Session, user: User) -> list[DistributionRule]:
    query = select(DistributionRule).where(rules_visible(user))
    return list(session.scalars(query.order_by(DistributionRule.position, DistributionRule.id)))


def load_rule(session: Session, user: User, rule_id: int, *, manage: bool = True) -> DistributionRule:
    """The rule `user` asks for: 404 if they cannot see it, 403 if `manage` and they cannot manage it."""
    query = select(DistributionRule).where(DistributionRule.id == rule_id, rules_visible(user))
    if manage and session.get_bind().dialect.name == "postgresql":
        # Held until commit, as routing holds it: a change never lands between a routing's read of the
        # members and its write of their counters.
        query = query.with_for_update()
    rule = session.scalar(query.execution_options(populate_existing=True)) if is_db_id(rule_id) else None
    if rule is None:
        raise ApiError(404, "rule_not_found", "分配规则不存在")
    if manage:
        check_rule_scope(user, rule.team)
    return rule


def _members_of(session: Session, rule_id: int) -> list[tuple[int, int]]:
    rows = session.execute(
        select(DistributionMember.user_id, DistributionMember.weight)
        .where(DistributionMember.rule_id == rule_id)
        .order_by(DistributionMember.user_id)
    )
    return [(uid, weight) for uid, weight in rows]


def _set_members(session: Session, rule: DistributionRule, members: list[tuple[int, int]]) -> None:
    """Replace the members; those staying keep their place in the weighted rotation."""
    kept = {
        m.user_id: m for m in session.scalars(select(DistributionMember).where(DistributionMember.rule_id == rule.id))
    }
    wanted = dict(members)
    for uid, member in kept.items():
        if uid not in wanted:
            session.delete(member)
        else:
            member.weight = wanted[uid]
    for uid, weight in members:
        if uid not in kept:
            session.add(DistributionMember(rule_id=rule.id, user_id=uid, weight=weight, current_weight=0))


def create_rule(session: Session, user: User, body: DistributionRuleCreate, now: datetime) -> DistributionRule:
    check_rule_scope(user, body.team)
    require_team(session, body.team)
    position = body.position
    if position is None:
        position = (session.scalar(select(func.max(DistributionRule.position))) or 0) + 1
    rule = DistributionRule(
        name=body.name,
        position=position,
        enabled=True if body.enabled is None else body.enabled,
        team=body.team,
        sources=body.sources or [],
        regions=body.regions or [],
        tags=body.tags or [],
        applies_on=list(body.applies_on or ["new"]),
        action=body.action,
        target_user_id=body.target_user_id,
        target_pool_id=body.target_pool_id,
        fallback=body.fallback or "pool",
        fallback_user_id=body.fallback_user_id,
        fallback_pool_id=body.fallback_pool_id,
        created_at=now,
        updated_at=now,
    )
    members = [(m.user_id, m.weight) for m in body.members or []]
    changed = set(body.model_dump(exclude_unset=True)) | {"action", "members"}
    check_rule(session, user, rule, members, changed)
    session.add(rule)
    session.flush()
    _set_members(session, rule, members)
    session.flush()
    return rule


# Fields a PATCH may not clear: null there means "leave as is".
NOT_CLEARABLE = ("name", "position", "enabled", "sources", "regions", "tags", "applies_on", "action", "fallback")


def update_rule(
    session: Session, user: User, rule_id: int, body: DistributionRuleFields, now: datetime
) -> DistributionRule:
    changes = body.model_dump(exclude_unset=True)
    rule = load_rule(session, user, rule_id)
    if "team" in changes:
        check_rule_scope(user, changes["team"])
        require_team(session, changes["team"])
    members = _members_of(session, rule.id)
    new_members = changes.pop("members", None)
    if new_members is not None:
        members = [(m["user_id"], m["weight"]) for m in new_members]
    for key, value in changes.items():
        if value is None and key in NOT_CLEARABLE:
            continue
        setattr(rule, key, value)
    changed = set(changes) | ({"members"} if new_members is not None or "team" in changes else set())
    check_rule(session, user, rule, members, changed)
    if new_members is not None:
        _set_members(session, rule, members)
    rule.updated_at = now
    session.flush()
    return rule


def reorder(session: Session, user: User, rule_ids: list[int]) -> list[DistributionRule]:
    """Put these rules in this order among the places they hold now; other rules keep their places."""
    ids = list(dict.fromkeys(rule_ids))
    locked = {i: load_rule(session, user, i) for i in sorted(ids)}  # locked in id order, as routing locks them
    rules = [locked[i] for i in ids]
    places = sorted(r.position for r in rules)
    for i, (rule, place) in enumerate(zip(rules, places, strict=True)):
        # Rules sharing a place get consecutive ones, so the new order is exact.
        rule.position = max(place, places[i - 1] + 1 if i else place)
        places[i] = rule.position
    session.flush()
    return list_rules(session, user)


def delete_rule(session: Session, rule: DistributionRule) -> None:
    session.execute(delete(DistributionMember).where(DistributionMember.rule_id == rule.id))
    session.delete(rule)


def rule_out(session: Session, rule: DistributionRule) -> DistributionRuleOut:
    members = _members_of(session, rule.id)
    people = users_by_id(session, {rule.target_user_id, rule.fallback_user_id} | {uid for uid, _w in members})
    pool_ids = {p for p in (rule.target_pool_id, rule.fallback_pool_id) if p is not None}
    pools = {p.id: p.name for p in session.scalars(select(Pool).where(Pool.id.in_(pool_ids)))} if pool_ids else {}

    def name(uid: int | None) -> str | None:
        return people[uid].name if uid in people else None

    return DistributionRuleOut(
        id=rule.id,
        name=rule.name,
        position=rule.position,
        enabled=rule.enabled,
        team=rule.team,
        sources=list(rule.sources or []),
        regions=list(rule.regions or []),
        tags=list(rule.tags or []),
        applies_on=list(rule.applies_on or []),  # type: ignore[arg-type]  # checked when written
        action=rule.action,  # type: ignore[arg-type]
        target_user_id=rule.target_user_id,
        target_user_name=name(rule.target_user_id),
        target_pool_id=rule.target_pool_id,
        target_pool_name=pools.get(rule.target_pool_id or 0),
        fallback=rule.fallback,  # type: ignore[arg-type]
        fallback_user_id=rule.fallback_user_id,
        fallback_user_name=name(rule.fallback_user_id),
        fallback_pool_id=rule.fallback_pool_id,
        fallback_pool_name=pools.get(rule.fallback_pool_id or 0),
        members=[
            DistributionMemberOut(
                user_id=uid, name=people[uid].name, team=people[uid].team, active=people[uid].active, weight=w
            )
            for uid, w in members
            if uid in people
        ],
        created_at=rule.created_at,
        updated_at=rule.updated_at,
    )


# --- dry run ---------------------------------------------------------------------------------------------------


def dry_run(
    session: Session, settings: Settings, user: User, body: DistributionDryRunBody, now: datetime
) -> DistributionDryRunOut:
    """Which rule a lead like this matches, who would get it and why each other candidate was passed over.

    Read-only: decided on this session's copy of the rotation, which is never committed.
    """
    team = body.team if body.team is not None else (user.team if user.role == "manager" else None)
    tags = [t.strip() for t in body.tags if t.strip()]
    lead = Lead(body.source.strip(), body.region.strip(), tags, team)
    rule = first_match(enabled_rules(session), lead, body.applies_on)
    if rule is None:
        return DistributionDryRunOut(matched=False, outcome="no_rule", summary="没有匹配的分配规则：线索留在公海")
    router = Router(session, settings, now)
    (rule,) = router.prepare([rule], lock=False)
    if rule.action in ("round_robin", "weighted", "least_loaded"):
        order = router.rotation(rule)
    else:
        order = [rule.target_user_id] if rule.action == "user" and rule.target_user_id in router.users else []
    verdict = router.decide(rule, set(), explain=True)
    chosen = verdict.to_user
    candidates: list[DistributionCandidateOut] = []
    for uid in order:
        person = router.users[uid]
        why = verdict.skipped.get(person.id)
        status: Literal["chosen", "skipped", "available"] = (
            "chosen" if chosen is not None and person.id == chosen.id else "skipped" if why else "available"
        )
        candidates.append(
            DistributionCandidateOut(
                user_id=person.id,
                name=person.name,
                status=status,
                reason=why,
                reason_text=SKIP_TEXT[why] if why else None,
            )
        )
    pool_name = None
    if verdict.to_user is None and verdict.to_pool is not None:
        pool = session.get(Pool, verdict.to_pool)
        pool_name = pool.name if pool else None
    where = pool_name or "全公司公海"
    if verdict.outcome in ("user", "fallback_user") and chosen is not None:
        summary = f"规则「{rule.name}」：{chosen.name} 会收到这条线索" + (
            "（兜底）" if verdict.outcome == "fallback_user" else ""
        )
    elif verdict.outcome == "stays":
        summary = f"规则「{rule.name}」：无人可接收，兜底接收人也不可用，线索留在原公海"
    elif verdict.outcome == "fallback_pool":
        summary = f"规则「{rule.name}」：无人可接收，线索进入{where}"
    else:
        summary = f"规则「{rule.name}」：线索进入{where}"
    return DistributionDryRunOut(
        matched=True,
        rule_id=rule.id,
        rule_name=rule.name,
        action=rule.action,  # type: ignore[arg-type]
        outcome=verdict.outcome,
        assignee_id=chosen.id if chosen else None,
        assignee_name=chosen.name if chosen else None,
        pool_id=verdict.to_pool if chosen is None else None,
        pool_name=pool_name if chosen is None else None,
        candidates=candidates,
        summary=summary,
    )


# --- availability ----------------------------------------------------------------------------------------------


def availability_user(session: Session, actor: User, user_id: int) -> User:
    """The person whose availability `actor` reads or sets: themselves, their team's (managers), anyone (admins)."""
    target = existing_user(session, user_id)
    if actor.role == "admin" or actor.id == target.id:
        return target
    if actor.role == "manager" and same_team(actor, target):
        return target
    raise forbidden("只能查看和设置自己或本团队成员的工作时间")


def availability_out(session: Session, settings: Settings, user: User, now: datetime) -> AvailabilityOut:
    row = session.get(UserAvailability, user.id)
    why = standing_reason(user, row, now, settings)
    return AvailabilityOut(
        user_id=user.id,
        user_name=user.name,
        working_hours=row.working_hours if row else None,
        leave_from=row.leave_from if row else None,
        leave_until=row.leave_until if row else None,
        timezone=settings.timezone,
        available_now=why is None,
        reason=why,
        reason_text=SKIP_TEXT[why] if why else None,
    )


def set_availability(session: Session, user: User, body: AvailabilityIn, now: datetime) -> None:
    row = session.get(UserAvailability, user.id)
    if row is None:
        row = UserAvailability(user_id=user.id)
        session.add(row)
    row.working_hours = (
        {day: [[s, e] for s, e in sorted(ranges)] for day, ranges in sorted(body.working_hours.items())}
        if body.working_hours is not None
        else None
    )
    row.leave_from = body.leave_from
    row.leave_until = body.leave_until
    row.updated_at = now
    session.flush()
