"""Teams: creating, renaming and deleting them, checking that a team named by a user or a rule exists.

A team's name is what users and transfer rules store (a foreign key to `teams.name` with ON UPDATE
CASCADE), so a rename is one UPDATE of the team row that the database carries to every member and rule
in the same transaction. A team's managers are its users with role manager: the permission model where a
manager manages their own team (leadpush.permissions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from leadpush.errors import ApiError
from leadpush.routing.models import DistributionRule
from leadpush.teams.models import TEAM_NAME_MAX, Team
from leadpush.text import single_line
from leadpush.transfer.models import TransferRule, TransferRun
from leadpush.users.models import User

MAX_ID = 2**31 - 1


def team_not_found(name: str) -> ApiError:
    return ApiError(422, "team_not_found", f"团队「{name}」不存在，请先在“用户”页面创建该团队")


def clean_team_name(name: str | None) -> str:
    """A team name as stored: one line, no control characters, surrounding blanks dropped, not empty."""
    cleaned = "".join(ch for ch in (name or "") if ch >= " " and ch != "\x7f").strip()
    if not cleaned:
        raise ApiError(422, "invalid_team_name", "团队名称不能为空")
    try:
        cleaned = single_line(cleaned, "团队名称")
    except ValueError as exc:
        raise ApiError(422, "invalid_team_name", str(exc)) from exc
    if len(cleaned) > TEAM_NAME_MAX:
        raise ApiError(422, "invalid_team_name", f"团队名称不能超过 {TEAM_NAME_MAX} 个字符")
    return cleaned


def team_named(session: Session, name: str) -> Team | None:
    return session.scalar(select(Team).where(Team.name == name))


def require_team(session: Session, name: str | None) -> None:
    """Refuse (422 `team_not_found`) a team name that is not a team; None (no team) is always fine."""
    if name is not None and team_named(session, name) is None:
        raise team_not_found(name)


def ensure_team(session: Session, name: str | None) -> None:
    """Create the team `name` unless it exists (the CLI's `user create --team`, which predates teams)."""
    if name is not None and team_named(session, name) is None:
        session.add(Team(name=name))
        session.flush()


def existing_team(session: Session, team_id: int) -> Team:
    team = session.get(Team, team_id) if 0 < team_id <= MAX_ID else None
    if team is None:
        raise ApiError(404, "team_not_found", "团队不存在")
    return team


def list_teams(session: Session) -> list[Team]:
    return list(session.scalars(select(Team).order_by(Team.name)))


@dataclass
class TeamSummary:
    members: int = 0
    active_members: int = 0
    rules: int = 0
    managers: list[User] = field(default_factory=list)


def summaries(session: Session) -> dict[str, TeamSummary]:
    """Per team name: how many users (and active ones) and rules it has, and its managers."""
    out: dict[str, TeamSummary] = {}
    for name, active, count in session.execute(
        select(User.team, User.active, func.count()).where(User.team.is_not(None)).group_by(User.team, User.active)
    ):
        summary = out.setdefault(name or "", TeamSummary())
        summary.members += count
        if active:
            summary.active_members += count
    for name, count in session.execute(
        select(TransferRule.team, func.count()).where(TransferRule.team.is_not(None)).group_by(TransferRule.team)
    ):
        out.setdefault(name or "", TeamSummary()).rules = count
    for manager in session.scalars(
        select(User).where(User.role == "manager", User.team.is_not(None)).order_by(User.id)
    ):
        out.setdefault(manager.team or "", TeamSummary()).managers.append(manager)
    return out


def _flush_name(session: Session) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        raise ApiError(409, "team_exists", "已有同名团队") from exc


def create_team(session: Session, name: str) -> Team:
    name = clean_team_name(name)
    if team_named(session, name) is not None:
        raise ApiError(409, "team_exists", f"已有名为「{name}」的团队")
    team = Team(name=name)
    session.add(team)
    _flush_name(session)
    return team


def rename_team(session: Session, team_id: int, new_name: str) -> tuple[Team, str]:
    """Rename a team; its members and rules follow (ON UPDATE CASCADE), and so does the run history.

    Answers the team and its old name.
    """
    team = existing_team(session, team_id)
    new_name = clean_team_name(new_name)
    old_name = team.name
    if new_name == old_name:
        return team, old_name
    other = team_named(session, new_name)
    if other is not None:
        raise ApiError(409, "team_exists", f"已有名为「{new_name}」的团队")
    team.name = new_name
    _flush_name(session)
    _rename_in_run_history(session, old_name, new_name)
    # The database changed members and rules itself; objects already loaded must not keep the old name.
    session.expire_all()
    return team, old_name


def _rename_in_run_history(session: Session, old: str, new: str) -> None:
    """Transfer runs record team names (a manager's run, per-team counts, failures), and a manager sees
    the runs of their team by name: carry the new name into them too, so history stays theirs."""
    for run_id, stored in session.execute(select(TransferRun.id, TransferRun.details)).all():
        details: dict[str, Any] = dict(stored or {})
        changed = False
        if details.get("team") == old:
            details["team"] = new
            changed = True
        teams = details.get("teams")
        if isinstance(teams, dict) and old in teams:
            details["teams"] = {(new if k == old else k): v for k, v in teams.items()}
            changed = True
        failures = details.get("failures")
        if isinstance(failures, list) and any(isinstance(f, dict) and f.get("team") == old for f in failures):
            details["failures"] = [
                {**f, "team": new} if isinstance(f, dict) and f.get("team") == old else f for f in failures
            ]
            changed = True
        if changed:
            session.execute(update(TransferRun).where(TransferRun.id == run_id).values(details=details))


def delete_team(session: Session, team_id: int) -> Team:
    """Delete an empty team; one that still has users (active or not) or rules is refused (409)."""
    team = existing_team(session, team_id)
    members = session.scalar(select(func.count()).select_from(User).where(User.team == team.name)) or 0
    rules = session.scalar(select(func.count()).select_from(TransferRule).where(TransferRule.team == team.name)) or 0
    routing = (
        session.scalar(select(func.count()).select_from(DistributionRule).where(DistributionRule.team == team.name))
        or 0
    )
    if members or rules or routing:
        parts = [
            f"{members} 名成员" if members else "",
            f"{rules} 条流转规则" if rules else "",
            f"{routing} 条分配规则" if routing else "",
        ]
        raise ApiError(
            409,
            "team_not_empty",
            f"团队「{team.name}」还有{'、'.join(p for p in parts if p)}，请先将其移到其他团队后再删除",
            details={"members": members, "rules": rules} | ({"distributionRules": routing} if routing else {}),
        )
    session.delete(team)
    session.flush()
    return team
