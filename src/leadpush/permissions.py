"""Who may see and move which lead: sales their own and the pool, managers their team, admins all."""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, or_, select, true
from sqlalchemy.orm import QueryableAttribute, Session

from leadpush.errors import ApiError, forbidden
from leadpush.leads.models import Customer
from leadpush.pools.access import may_use, pooled_lead_filter
from leadpush.pools.models import Pool
from leadpush.users.models import User


def same_team(a: User, b: User) -> bool:
    return a.team is not None and a.team == b.team


def manages_team(actor: User, team: str | None) -> bool:
    """Whether `actor` administers what is scoped to `team` (None = company-wide: admins only).

    No team means no rights: a manager without a team manages no team, and `None == None` must never
    make them the manager of everything company-wide.
    """
    if actor.role == "admin":
        return True
    return actor.role == "manager" and actor.team is not None and team is not None and team == actor.team


def check_team_rule_scope(user: User, team: str | None, what: str) -> None:
    """Creating, changing or deleting a rule (`what`: 流转规则, 分配规则, …) of `team`: its managers and admins;
    a company-wide one (None) only admins."""
    if manages_team(user, team):
        return
    if user.team is None:
        raise forbidden(f"未分配团队的经理不能管理{what}")
    if team is None:
        raise forbidden(f"只有管理员可以管理全公司的{what}")
    raise forbidden(f"经理只能管理本团队的{what}（team 必须是本团队）")


def team_rules_visible(user: User, team_column: QueryableAttribute[str | None]) -> ColumnElement[bool]:
    """SQL condition for the team-scoped rules `user` may see: all (admins); company-wide ones and their team's."""
    if user.role == "admin":
        return true()
    if user.team is None:
        return team_column.is_(None)
    return or_(team_column.is_(None), team_column == user.team)


def team_members(manager: User) -> ColumnElement[bool]:
    """SQL condition for the users a manager manages: their team (or only themselves, without a team)."""
    return User.team == manager.team if manager.team else User.id == manager.id


def visible_filter(actor: User) -> ColumnElement[bool]:
    """SQL condition for the leads `actor` may see."""
    if actor.role == "admin":
        return true()
    # A lead in a pool: the company pool's are everyone's, a pool row's its users' (leadpush.pools.access).
    pooled = and_(Customer.owner_id.is_(None), pooled_lead_filter(actor))
    if actor.role == "manager":
        team_ids = select(User.id).where(team_members(actor))
        return or_(pooled, Customer.owner_id.in_(team_ids))
    return or_(pooled, Customer.owner_id == actor.id)


def can_see(session: Session, actor: User, customer: Customer, owner: User | None) -> bool:
    if actor.role == "admin" or customer.owner_id == actor.id:
        return True
    if customer.owner_id is None:
        return customer.pool_id is None or may_use(session, actor, session.get(Pool, customer.pool_id))
    return actor.role == "manager" and owner is not None and same_team(actor, owner)


def check_can_assign(actor: User, current_owner: User | None, target: User | None) -> None:
    """Managers move leads within their team (pool included); admins anywhere; sales never."""
    if actor.role == "admin":
        return
    if actor.role != "manager":
        raise forbidden("销售人员不能分配线索，请从公海领取")
    if current_owner is not None and current_owner.id != actor.id and not same_team(actor, current_owner):
        raise forbidden("只能分配本团队的线索")
    if target is not None and target.id != actor.id and not same_team(actor, target):
        raise forbidden("只能分配给本团队成员")


def check_can_release(actor: User, owner: User | None) -> None:
    if owner is None:
        raise ApiError(409, "not_owned", "该线索已在公海中")
    if actor.role == "admin" or owner.id == actor.id:
        return
    if actor.role == "manager" and same_team(actor, owner):
        return
    raise forbidden("只能释放自己的线索")
