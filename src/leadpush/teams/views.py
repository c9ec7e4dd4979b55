"""HTTP routes for teams: everyone signed in reads the names; admins and managers also see members,
rules and managers; admins create, rename and delete."""

from __future__ import annotations

from fastapi import APIRouter

from leadpush.deps import AdminUser, Ctx, CurrentUser
from leadpush.schemas import Envelope
from leadpush.teams import service
from leadpush.teams.models import Team
from leadpush.teams.schemas import TeamBody, TeamManager, TeamOut

router = APIRouter(prefix="/api", tags=["teams"])


def team_out(team: Team, summary: service.TeamSummary | None) -> TeamOut:
    out = TeamOut(id=team.id, name=team.name, created_at=team.created_at)
    if summary is not None:
        out.member_count = summary.members
        out.active_member_count = summary.active_members
        out.rule_count = summary.rules
        out.managers = [TeamManager(id=m.id, name=m.name, active=m.active) for m in summary.managers]
    return out


@router.get("/teams", response_model=Envelope[list[TeamOut]])
def list_teams(ctx: Ctx, user: CurrentUser) -> Envelope:
    """Every team by name; admins and managers also get member and rule counts and the managers."""
    staff = user.role in ("admin", "manager")
    with ctx.db.read() as session:
        teams = service.list_teams(session)
        summaries = service.summaries(session) if staff else {}
    empty = service.TeamSummary()
    return Envelope(data=[team_out(t, summaries.get(t.name, empty) if staff else None) for t in teams])


@router.post("/teams", response_model=Envelope[TeamOut], status_code=201)
def create_team(body: TeamBody, ctx: Ctx, admin: AdminUser) -> Envelope:
    with ctx.db.write() as session:
        team = service.create_team(session, body.name)
        out = team_out(team, service.TeamSummary())
    return Envelope(message="团队已创建", data=out)


@router.patch("/teams/{team_id:int}", response_model=Envelope[TeamOut])
def rename_team(team_id: int, body: TeamBody, ctx: Ctx, admin: AdminUser) -> Envelope:
    """Rename a team: its members, its transfer rules and the run history follow in one transaction."""
    with ctx.db.write() as session:
        team, old_name = service.rename_team(session, team_id, body.name)
        out = team_out(team, service.summaries(session).get(team.name, service.TeamSummary()))
    message = "团队名称未改变" if old_name == out.name else f"团队「{old_name}」已改名为「{out.name}」"
    return Envelope(message=message, data=out)


@router.delete("/teams/{team_id:int}", response_model=Envelope[TeamOut])
def delete_team(team_id: int, ctx: Ctx, admin: AdminUser) -> Envelope:
    """Delete a team that has no users and no rules (409 `team_not_empty` otherwise)."""
    with ctx.db.write() as session:
        team = service.delete_team(session, team_id)
        out = team_out(team, None)
    return Envelope(message=f"团队「{out.name}」已删除", data=out)
