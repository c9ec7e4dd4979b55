"""HTTP routes for notification preferences: one's own, a team member's (admins, the team's managers),
and a team's default quiet hours."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from leadpush.config import Settings
from leadpush.deps import Ctx, CurrentUser
from leadpush.errors import ApiError, forbidden, not_found
from leadpush.notify import preferences as prefs
from leadpush.notify.models import TeamNotificationDefault
from leadpush.notify.policy import CATEGORY_NAMES, NAMES, PERSONAL_CHANNELS
from leadpush.permissions import manages_team, same_team
from leadpush.schemas import CamelModel, Envelope, RequestModel
from leadpush.teams.models import Team
from leadpush.users.models import User

router = APIRouter(prefix="/api", tags=["notification preferences"])

Category = Literal["new_leads", "first_contact", "follow_up", "transfer_warning", "lead_updates", "taken_back"]
PersonalChannel = Literal["wechat", "wecom"]
QuietMode = Literal["team", "none", "custom", "working_hours"]
TeamQuietMode = Literal["none", "custom", "working_hours"]
TIME_DOC = "HH:MM（LEADPUSH_TIMEZONE），可跨午夜，如 22:00–08:00；null 清除"
MAX_ID = 2**31 - 1


class CategoryPreference(CamelModel):
    category: Category
    name: str = Field(description="分类名称（中文）")
    allowed_channels: list[PersonalChannel] = Field(description="管理员允许自选的推送渠道")
    chosen_channels: list[PersonalChannel] | None = Field(description="本人的选择；null = 使用默认")
    default_channels: list[PersonalChannel] = Field(description="默认（部署策略）使用的推送渠道")
    effective_channels: list[PersonalChannel] = Field(description="实际使用的推送渠道（未看是否绑定）")


class ChannelStatus(CamelModel):
    channel: PersonalChannel
    name: str
    configured: bool = Field(description="部署是否配置了该渠道")
    bound: bool = Field(description="该用户是否已绑定（小程序 openid / 企业微信账号）")


class TeamDefaultOut(CamelModel):
    team_id: int
    team_name: str
    quiet_mode: TeamQuietMode
    quiet_start: str | None
    quiet_end: str | None
    updated_at: datetime | None


class PreferencesOut(CamelModel):
    user_id: int
    user_name: str
    team: str | None
    categories: list[CategoryPreference]
    channels: list[ChannelStatus]
    quiet_mode: QuietMode
    quiet_start: str | None
    quiet_end: str | None
    urgent_override: bool = Field(description="紧急通知（首次联系提醒、升级）在免打扰时段也发送")
    team_default: TeamDefaultOut | None = Field(description="所在团队的默认免打扰（quietMode = team 时生效）")
    updated_at: datetime | None


class PreferencesUpdate(RequestModel):
    """What to change; fields left out stay as they are."""

    channels: dict[Category, list[PersonalChannel] | None] | None = Field(
        default=None, description="分类 -> 想用的推送渠道（[] = 只要站内通知；null = 恢复默认）；未列出的分类不变"
    )
    quiet_mode: QuietMode | None = None
    quiet_start: str | None = Field(default=None, max_length=16, description=TIME_DOC)
    quiet_end: str | None = Field(default=None, max_length=16, description=TIME_DOC)
    urgent_override: bool | None = None


class TeamDefaultUpdate(RequestModel):
    quiet_mode: TeamQuietMode | None = None
    quiet_start: str | None = Field(default=None, max_length=16, description=TIME_DOC)
    quiet_end: str | None = Field(default=None, max_length=16, description=TIME_DOC)


def _quiet_changes(body: PreferencesUpdate | TeamDefaultUpdate) -> dict[str, str | None]:
    given = body.model_fields_set
    changes: dict[str, str | None] = {}
    if "quiet_mode" in given and body.quiet_mode is not None:
        changes["mode"] = body.quiet_mode
    if "quiet_start" in given:
        changes["start"] = body.quiet_start
    if "quiet_end" in given:
        changes["end"] = body.quiet_end
    return changes


def _team_default_out(team: Team, row: TeamNotificationDefault | None) -> TeamDefaultOut:
    return TeamDefaultOut(
        team_id=team.id,
        team_name=team.name,
        quiet_mode=row.quiet_mode if row else "none",  # type: ignore[arg-type]  # one of TEAM_QUIET_MODES
        quiet_start=row.quiet_start if row else None,
        quiet_end=row.quiet_end if row else None,
        updated_at=row.updated_at if row else None,
    )


def preferences_out(session: Session, settings: Settings, user: User) -> PreferencesOut:
    row = prefs.preference_of(session, user.id)
    choices = row.channels if row else None
    team = session.scalar(select(Team).where(Team.name == user.team)) if user.team else None
    categories = [
        CategoryPreference(
            category=category,  # type: ignore[arg-type]  # a key of CATEGORIES
            name=CATEGORY_NAMES[category],
            allowed_channels=list(prefs.allowed_channels(settings, category)),  # type: ignore[arg-type]
            chosen_channels=(choices or {}).get(category),  # type: ignore[arg-type]
            default_channels=prefs.effective_channels(settings, None, category),  # type: ignore[arg-type]
            effective_channels=prefs.effective_channels(settings, choices, category),  # type: ignore[arg-type]
        )
        for category in prefs.categories_in_order()
    ]
    configured = {"wechat": settings.wechat_enabled, "wecom": settings.wecom_enabled}
    bound = {"wechat": bool(user.wechat_openid), "wecom": bool(user.wecom_userid)}
    return PreferencesOut(
        user_id=user.id,
        user_name=user.name,
        team=user.team,
        categories=categories,
        channels=[
            ChannelStatus(channel=c, name=NAMES[c], configured=configured[c], bound=bound[c])  # type: ignore[arg-type]
            for c in PERSONAL_CHANNELS
        ],
        quiet_mode=row.quiet_mode if row else "team",  # type: ignore[arg-type]  # one of QUIET_MODES
        quiet_start=row.quiet_start if row else None,
        quiet_end=row.quiet_end if row else None,
        urgent_override=row.urgent_override if row else True,
        team_default=_team_default_out(team, prefs.team_default_of(session, team.id)) if team else None,
        updated_at=row.updated_at if row else None,
    )


def _person(session: Session, actor: User, user_id: int) -> User:
    """The person whose settings `actor` reads or changes: themselves; anyone (admins); their team (managers)."""
    target = session.get(User, user_id) if 0 < user_id <= MAX_ID else None
    if target is None:
        raise not_found("user")
    if target.id == actor.id or actor.role == "admin":
        return target
    if actor.role == "manager" and same_team(actor, target):
        return target
    raise forbidden("只能查看和修改本团队成员的通知设置")


def _save(ctx: Ctx, actor: User, user_id: int, body: PreferencesUpdate) -> PreferencesOut:
    try:
        return _save_once(ctx, actor, user_id, body)
    except IntegrityError:  # a first save of the same person's settings committed meanwhile: theirs is there now
        return _save_once(ctx, actor, user_id, body)


def _save_once(ctx: Ctx, actor: User, user_id: int, body: PreferencesUpdate) -> PreferencesOut:
    with ctx.db.write() as session:
        target = _person(session, actor, user_id)
        prefs.update_preference(
            session,
            ctx.settings,
            target.id,
            channels={k: list(v) if v is not None else None for k, v in (body.channels or {}).items()},
            quiet=_quiet_changes(body),
            urgent_override=body.urgent_override,
            now=ctx.clock.now(),
        )
        return preferences_out(session, ctx.settings, target)


@router.get("/me/notification-preferences", response_model=Envelope[PreferencesOut])
def my_preferences(ctx: Ctx, user: CurrentUser) -> Envelope:
    """The caller's notification settings: per category the channels they may choose, chose and get; the
    channels they are bound to; quiet hours (their own, or their team's default)."""
    with ctx.db.read() as session:
        out = preferences_out(session, ctx.settings, _person(session, user, user.id))
    return Envelope(data=out)


@router.put("/me/notification-preferences", response_model=Envelope[PreferencesOut])
def change_my_preferences(body: PreferencesUpdate, ctx: Ctx, user: CurrentUser) -> Envelope:
    """Change one's notification settings (only what the body names). Turning on a channel the admin does not
    let people choose for that category: 422 `channel_not_allowed`."""
    return Envelope(message="通知设置已保存", data=_save(ctx, user, user.id, body))


@router.get("/users/{user_id:int}/notification-preferences", response_model=Envelope[PreferencesOut])
def user_preferences(user_id: int, ctx: Ctx, user: CurrentUser) -> Envelope:
    """A person's notification settings: admins anyone's, managers their team's, everyone their own."""
    with ctx.db.read() as session:
        out = preferences_out(session, ctx.settings, _person(session, user, user_id))
    return Envelope(data=out)


@router.put("/users/{user_id:int}/notification-preferences", response_model=Envelope[PreferencesOut])
def change_user_preferences(user_id: int, body: PreferencesUpdate, ctx: Ctx, user: CurrentUser) -> Envelope:
    """Change a person's notification settings (admins anyone's, managers their team's)."""
    return Envelope(message="通知设置已保存", data=_save(ctx, user, user_id, body))


def _team(session: Session, actor: User, team_id: int) -> Team:
    team = session.get(Team, team_id) if 0 < team_id <= MAX_ID else None
    if team is None:
        raise ApiError(404, "team_not_found", "团队不存在")
    if not manages_team(actor, team.name):
        raise forbidden("只有管理员和本团队经理可以设置团队的默认免打扰时段")
    return team


@router.get("/teams/{team_id:int}/notification-defaults", response_model=Envelope[TeamDefaultOut])
def team_defaults(team_id: int, ctx: Ctx, user: CurrentUser) -> Envelope:
    """A team's default quiet hours (for members who keep 跟随团队): admins, the team's managers."""
    with ctx.db.read() as session:
        team = _team(session, user, team_id)
        out = _team_default_out(team, prefs.team_default_of(session, team.id))
    return Envelope(data=out)


@router.put("/teams/{team_id:int}/notification-defaults", response_model=Envelope[TeamDefaultOut])
def change_team_defaults(team_id: int, body: TeamDefaultUpdate, ctx: Ctx, user: CurrentUser) -> Envelope:
    """Set a team's default quiet hours: none | custom (quietStart–quietEnd) | working_hours."""

    def save() -> TeamDefaultOut:
        with ctx.db.write() as session:
            team = _team(session, user, team_id)
            row = prefs.update_team_default(session, team.id, _quiet_changes(body), ctx.clock.now())
            return _team_default_out(team, row)

    try:
        out = save()
    except IntegrityError:  # the team's first default was saved meanwhile: change that one
        out = save()
    return Envelope(message=f"团队「{out.team_name}」的默认免打扰时段已保存", data=out)
