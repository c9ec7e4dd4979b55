"""The router: for each lead, the first enabled rule (by position) whose conditions match picks a person or a
pool, skipping people who cannot take it now; every move then goes through `change_owner` in one call.

Fairness across processes: the rotation state (a rule's cursor, its members' smooth-weighted counters) is
read and advanced while the rule rows are held with SELECT ... FOR UPDATE until the caller's commit
(PostgreSQL; SQLite write transactions are serialised already). Two api processes routing at once queue on
the rule row, so the second sees the first one's turn and nobody gets two turns. A batch (an intake of
10,000 leads) is decided in Python under one lock with a fixed number of queries, whatever its size.

A lead's team (what a team-scoped rule routes): the team of the pool it sits in; otherwise, for a new lead,
the creator's team, and for a released or recycled one, the team of the person it came from. A
company-wide rule (team None) routes any lead.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from leadpush.assignment.models import Assignment
from leadpush.assignment.service import CLOSED_STATUSES, ChangeResult, Move, change_owner, lock_users
from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.leads.models import Customer
from leadpush.pools.cooldown import lost_since
from leadpush.pools.models import Pool
from leadpush.routing.models import DistributionMember, DistributionRule, UserAvailability
from leadpush.users.models import User

Event = Literal["new", "released", "recycled"]
SkipReason = Literal["inactive", "at_capacity", "off_hours", "on_leave", "cooldown"]
SKIP_TEXT: dict[str, str] = {
    "inactive": "已停用",
    "at_capacity": "线索已达上限",
    "off_hours": "不在工作时间",
    "on_leave": "正在休假",
    "cooldown": "刚失去这条线索，冷却期内不再分给他",
}
ROTATING = ("round_robin", "weighted", "least_loaded")
# How a lead came back to a pool -> the rules that may route it on (an SLA step taking it back is a recycle too).
VIA_EVENT: dict[str, Event] = {"release": "released", "auto_transfer": "recycled", "escalation": "recycled"}


@dataclass
class Lead:
    """What a rule's conditions look at; `customer` None in a dry run."""

    source: str
    region: str
    tags: list[str]
    team: str | None
    customer: Customer | None = None


def rule_matches(rule: DistributionRule, lead: Lead, event: str) -> bool:
    if event not in (rule.applies_on or []):
        return False
    if rule.team is not None and rule.team != lead.team:
        return False
    if rule.sources and lead.source not in rule.sources:
        return False
    if rule.regions and lead.region not in rule.regions:
        return False
    return not rule.tags or bool(set(rule.tags) & set(lead.tags or []))


def enabled_rules(session: Session) -> list[DistributionRule]:
    query = select(DistributionRule).where(DistributionRule.enabled.is_(True))
    return list(session.scalars(query.order_by(DistributionRule.position, DistributionRule.id)))


def first_match(rules: Sequence[DistributionRule], lead: Lead, event: str) -> DistributionRule | None:
    return next((r for r in rules if rule_matches(r, lead, event)), None)


def within_hours(hours: dict[str, list[list[str]]], local: datetime) -> bool:
    """Whether local wall time falls inside one of the day's ranges ("HH:MM", end exclusive, "24:00" allowed)."""
    now = f"{local.hour:02d}:{local.minute:02d}"
    return any(start <= now < end for start, end in hours.get(str(local.isoweekday()), []))


def on_leave(availability: UserAvailability | None, now: datetime) -> bool:
    if availability is None or (availability.leave_from is None and availability.leave_until is None):
        return False
    started = availability.leave_from is None or availability.leave_from <= now
    return started and (availability.leave_until is None or now < availability.leave_until)


def standing_reason(
    user: User, availability: UserAvailability | None, now: datetime, settings: Settings
) -> SkipReason | None:
    """Why `user` cannot take any routed lead now, capacity and cooldown aside (those depend on the batch)."""
    if not user.active:
        return "inactive"
    if on_leave(availability, now):
        return "on_leave"
    if availability is not None and availability.working_hours is not None:
        if not within_hours(availability.working_hours, now.astimezone(settings.tz)):
            return "off_hours"
    return None


@dataclass
class Verdict:
    """Where one lead goes under one rule, and (for a dry run) why candidates were passed over."""

    rule: DistributionRule
    to_user: User | None = None
    to_pool: int | None = None
    move: bool = True
    outcome: Literal["user", "pool", "fallback_user", "fallback_pool", "stays"] = "user"
    skipped: dict[int, SkipReason] = field(default_factory=dict)


class Router:
    """One batch's decisions. `prepare` loads what the rules need (locking the rules when `lock`), `decide`
    places each lead and advances the rotations in plain dictionaries, `save` writes them to the rule and
    member rows (a dry run never calls it). Per lead, only dictionaries are read: no query, no ORM attribute."""

    def __init__(self, session: Session, settings: Settings, now: datetime) -> None:
        self.session = session
        self.settings = settings
        self.now = now
        self.rules: dict[int, DistributionRule] = {}
        self.members: dict[int, list[DistributionMember]] = {}
        self.users: dict[int, User] = {}
        self.load: dict[int, int] = {}
        self.capacity: dict[int, int | None] = {}
        self.standing: dict[int, SkipReason | None] = {}
        # Per rule: the candidates' ids in turn order (ascending), their weights, the cursor, the counters.
        self.order: dict[int, list[int]] = {}
        self.weights: dict[int, dict[int, int]] = {}
        self.cursor: dict[int, int] = {}
        self.current: dict[int, dict[int, int]] = {}

    def prepare(self, rules: Iterable[DistributionRule], *, lock: bool) -> list[DistributionRule]:
        """Load (and with `lock`, hold until commit) these rules afresh with their people."""
        ids = sorted({r.id for r in rules})
        if not ids:
            return []
        query = select(DistributionRule).where(DistributionRule.id.in_(ids)).order_by(DistributionRule.id)
        if lock and self.session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        self.rules = {r.id: r for r in self.session.scalars(query.execution_options(populate_existing=True))}
        loaded = self.session.scalars(
            select(DistributionMember)
            .where(DistributionMember.rule_id.in_(ids))
            .order_by(DistributionMember.user_id)
            .execution_options(populate_existing=True)
        )
        for m in loaded:
            self.members.setdefault(m.rule_id, []).append(m)
        user_ids: set[int] = {m.user_id for ms in self.members.values() for m in ms}
        for rule in self.rules.values():
            user_ids.update(u for u in (rule.target_user_id, rule.fallback_user_id) if u is not None)
        teams = {r.team for r in self.rules.values() if r.team is not None and not self.members.get(r.id)}
        team_sales: dict[str, list[int]] = {}
        if teams:
            query_sales = select(User.id, User.team).where(User.team.in_(teams), User.role == "sales")
            for uid, team in self.session.execute(query_sales.order_by(User.id)):
                team_sales.setdefault(team or "", []).append(uid)
                user_ids.add(uid)
        if user_ids:
            self.users = {u.id: u for u in self.session.scalars(select(User).where(User.id.in_(user_ids)))}
            if lock:
                # Counted open leads stay true until commit (see assignment.service.lock_users).
                lock_users(self.session, [u.id for u in self.users.values() if u.capacity is not None])
            availability = {
                a.user_id: a
                for a in self.session.scalars(select(UserAvailability).where(UserAvailability.user_id.in_(user_ids)))
            }
            rows = self.session.execute(
                select(Customer.owner_id, func.count())
                .where(Customer.owner_id.in_(list(self.users)), Customer.status.not_in(CLOSED_STATUSES))
                .group_by(Customer.owner_id)
            )
            self.load = {uid: n for uid, n in rows if uid is not None}
            for user in self.users.values():
                self.capacity[user.id] = user.capacity
                self.standing[user.id] = standing_reason(user, availability.get(user.id), self.now, self.settings)
        for rule in self.rules.values():
            members = [m for m in self.members.get(rule.id, []) if m.user_id in self.users]
            if members:
                self.order[rule.id] = [m.user_id for m in members]
                self.weights[rule.id] = {m.user_id: m.weight for m in members}
                self.current[rule.id] = {m.user_id: m.current_weight or 0 for m in members}
            else:  # a team's rule without members: the team's salespeople (none for a company-wide rule)
                self.order[rule.id] = team_sales.get(rule.team or "", []) if rule.team else []
            self.cursor[rule.id] = rule.cursor_user_id or 0
        return [self.rules[i] for i in ids if i in self.rules]

    def rotation(self, rule: DistributionRule) -> list[int]:
        """The candidates' ids in turn order: those after the rule's cursor first, then from the start."""
        order = self.order.get(rule.id, [])
        start = bisect_right(order, self.cursor.get(rule.id, 0))
        return order[start:] + order[:start]

    def reason(self, uid: int, lost: set[int]) -> SkipReason | None:
        standing = self.standing.get(uid, "inactive")
        if standing is not None:
            return standing
        capacity = self.capacity.get(uid)
        if capacity is not None and self.load.get(uid, 0) >= capacity:
            return "at_capacity"
        if uid in lost:
            return "cooldown"
        return None

    def decide(
        self, rule: DistributionRule, lost: set[int], exclude: set[int] | None = None, *, explain: bool = False
    ) -> Verdict:
        """Where one lead goes under `rule`; advances the rule's rotation when someone is chosen. With
        `explain`, every candidate's reason is gathered (a dry run), not only those before the chosen one."""
        verdict = Verdict(rule)
        if rule.action == "pool":
            verdict.to_pool, verdict.outcome = rule.target_pool_id, "pool"
            return verdict
        if rule.action == "user":
            uid = rule.target_user_id or 0
            if uid in self.users:
                why = self.reason(uid, lost)
                if why is None:
                    return self._give(verdict, uid)
                verdict.skipped[uid] = why
            return self._fallback(verdict)
        first_only = rule.action == "round_robin" and not explain
        available: list[int] = []
        for uid in self.rotation(rule):
            if exclude and uid in exclude:
                continue
            why = self.reason(uid, lost)
            if why is not None:
                verdict.skipped[uid] = why
                continue
            available.append(uid)
            if first_only:
                break
        if not available:
            return self._fallback(verdict)
        if rule.action == "weighted":
            weights, current = self.weights[rule.id], self.current[rule.id]
            for uid in available:
                current[uid] += weights[uid]
            chosen = max(available, key=lambda u: current[u])  # the first of equals, in turn order
            current[chosen] -= sum(weights[u] for u in available)
        elif rule.action == "least_loaded":
            chosen = min(available, key=lambda u: self.load.get(u, 0))  # ties: the next in turn
        else:
            chosen = available[0]
        self.cursor[rule.id] = chosen
        return self._give(verdict, chosen)

    def save(self) -> None:
        """Write the advanced rotations to the (locked) rule and member rows."""
        for rule_id, rule in self.rules.items():
            cursor = self.cursor.get(rule_id) or None
            if rule.cursor_user_id != cursor:
                rule.cursor_user_id = cursor
            current = self.current.get(rule_id, {})
            for m in self.members.get(rule_id, []):
                if m.user_id in current and m.current_weight != current[m.user_id]:
                    m.current_weight = current[m.user_id]

    def _give(self, verdict: Verdict, uid: int) -> Verdict:
        self.load[uid] = self.load.get(uid, 0) + 1
        verdict.to_user = self.users[uid]
        return verdict

    def _fallback(self, verdict: Verdict) -> Verdict:
        rule = verdict.rule
        if rule.fallback == "user":
            uid = rule.fallback_user_id or 0
            # The fallback person is the safety net: working hours and leave do not keep a lead from them.
            capacity = self.capacity.get(uid)
            if uid in self.users and self.users[uid].active:
                if capacity is None or self.load.get(uid, 0) < capacity:
                    self._give(verdict, uid)
                    verdict.outcome = "fallback_user"
                    return verdict
            verdict.move, verdict.outcome = False, "stays"
            return verdict
        verdict.to_pool, verdict.outcome = rule.fallback_pool_id, "fallback_pool"
        return verdict


def _pools(session: Session, ids: set[int | None]) -> dict[int, Pool]:
    wanted = {i for i in ids if i is not None}
    return {p.id: p for p in session.scalars(select(Pool).where(Pool.id.in_(wanted)))} if wanted else {}


def _previous_owners(session: Session, customer_ids: list[int]) -> dict[int, int]:
    """Each lead's latest previous owner (whom it was last taken from or who gave it up)."""
    found: dict[int, int] = {}
    for start in range(0, len(customer_ids), 500):
        rows = session.execute(
            select(Assignment.customer_id, Assignment.from_user_id)
            .where(Assignment.customer_id.in_(customer_ids[start : start + 500]), Assignment.from_user_id.is_not(None))
            .order_by(Assignment.id)
        )
        for cid, uid in rows:
            if uid is not None:
                found[cid] = uid
    return found


def _in_cooldown(
    session: Session, customers: Sequence[Customer], pools: dict[int, Pool], settings: Settings, now: datetime
) -> dict[int, set[int]]:
    """Per lead, the people it was taken from within its pool's cooldown (else LEADPUSH_RECLAIM_COOLDOWN_HOURS)."""

    def hours(c: Customer) -> float:
        pool = pools.get(c.pool_id or 0)
        return (
            pool.cooldown_hours
            if pool is not None and pool.cooldown_hours is not None
            else settings.reclaim_cooldown_hours
        )

    longest = max((hours(c) for c in customers), default=0)
    if longest <= 0:
        return {}
    lost = lost_since(session, [c.id for c in customers], now - timedelta(hours=longest))
    by_id = {c.id: c for c in customers}
    return {
        cid: {uid for uid, at in who.items() if at > now - timedelta(hours=hours(by_id[cid]))}
        for cid, who in lost.items()
    }


def route(
    ctx: AppContext,
    session: Session,
    customers: Sequence[Customer],
    *,
    event: Event,
    actor: User | None,
    teams: dict[int, str | None],
    batch_id: str | None = None,
    notify: bool = True,
) -> ChangeResult | None:
    """Route these unowned leads by the enabled rules for `event`, in the caller's transaction.

    `batch_id` and `notify=False`: the moves belong to the caller's batch, which tells people later (a
    transfer run, see `assignment.service.notify_batch`)."""
    unowned = [c for c in customers if c.owner_id is None]
    if not unowned:
        return None
    rules = [r for r in enabled_rules(session) if event in (r.applies_on or [])]
    if not rules:
        return None
    matched: dict[int, tuple[Customer, DistributionRule]] = {}
    for c in unowned:
        rule = first_match(rules, Lead(c.source or "", c.region or "", list(c.tags or []), teams.get(c.id), c), event)
        if rule is not None:
            matched[c.id] = (c, rule)
    if not matched:
        return None
    now = ctx.clock.now()
    router = Router(session, ctx.settings, now)
    locked = {r.id: r for r in router.prepare({rule for _c, rule in matched.values()}, lock=True)}
    leads = [c for c, _rule in matched.values()]
    lost = (
        _in_cooldown(session, leads, _pools(session, {c.pool_id for c in leads}), ctx.settings, now)
        if event != "new"
        else {}
    )
    moves: list[Move] = []
    names: dict[int, str] = {}
    for cid in sorted(matched):
        customer, rule = matched[cid]
        fresh = locked.get(rule.id)
        if fresh is None or not fresh.enabled:  # deleted or switched off meanwhile
            continue
        verdict = router.decide(fresh, lost.get(cid, set()))
        if not verdict.move:
            continue
        names[fresh.id] = fresh.name
        moves.append(Move(customer, verdict.to_user, to_pool=verdict.to_pool))
    router.save()
    session.flush()  # the advanced cursors and counters, written under the rules' locks
    if not moves:
        return None
    reason = "分配规则：" + "、".join(names[i] for i in sorted(names))
    return change_owner(
        ctx,
        session,
        actor=actor,
        moves=moves,
        via="route",
        digest=len(moves) > 1,
        reason=reason[:200],
        now=now,
        batch_id=batch_id,
        notify=notify,
    )


def new_lead_teams(session: Session, customers: Sequence[Customer], actor: User | None) -> dict[int, str | None]:
    pools = _pools(session, {c.pool_id for c in customers})
    fallback = actor.team if actor is not None else None
    return {c.id: (pools[c.pool_id].team if c.pool_id in pools else fallback) for c in customers}


def returned_lead_teams(session: Session, customers: Sequence[Customer]) -> dict[int, str | None]:
    pools = _pools(session, {c.pool_id for c in customers})
    teams: dict[int, str | None] = {c.id: pools[c.pool_id].team for c in customers if c.pool_id in pools}
    rest = [c.id for c in customers if c.id not in teams]
    previous = _previous_owners(session, rest) if rest else {}
    owner_teams = dict(session.execute(select(User.id, User.team).where(User.id.in_(set(previous.values())))).all())
    for cid in rest:
        teams[cid] = owner_teams.get(previous.get(cid, 0))
    return teams


def next_for(session: Session, customer: Customer, exclude: set[int], settings: Settings, now: datetime) -> User | None:
    """The next person the first rotating rule matching `customer` gives it to, advancing that rotation."""
    owner = session.get(User, customer.owner_id) if customer.owner_id else None
    lead = Lead(customer.source or "", customer.region or "", list(customer.tags or []), owner.team if owner else None)
    rules = [
        r
        for r in enabled_rules(session)
        if r.action in (*ROTATING, "user") and any(rule_matches(r, lead, e) for e in r.applies_on or [])
    ]
    if not rules:
        return None
    router = Router(session, settings, now)
    (rule,) = router.prepare([rules[0]], lock=True)
    if not rule.enabled:
        return None
    shut_out = set(exclude) | ({customer.owner_id} if customer.owner_id else set())
    # Nor anyone who lost this lead within its cooldown.
    lost = _in_cooldown(session, [customer], _pools(session, {customer.pool_id}), settings, now).get(customer.id, set())
    if rule.action == "user":
        uid = rule.target_user_id or 0
        fine = uid in router.users and uid not in shut_out and router.reason(uid, lost) is None
        return router.users[uid] if fine else None
    verdict = router.decide(rule, lost, exclude=shut_out)
    router.save()
    session.flush()
    return verdict.to_user if verdict.outcome == "user" else None
