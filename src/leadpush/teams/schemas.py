"""API shapes of teams."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from leadpush.schemas import CamelModel, RequestModel
from leadpush.teams.models import TEAM_NAME_MAX


class TeamManager(CamelModel):
    id: int
    name: str
    active: bool


class TeamOut(CamelModel):
    id: int
    name: str
    created_at: datetime
    member_count: int | None = Field(default=None, description="成员人数（仅管理员与经理可见）")
    active_member_count: int | None = Field(default=None, description="在职成员人数（仅管理员与经理可见）")
    rule_count: int | None = Field(default=None, description="该团队的流转规则数（仅管理员与经理可见）")
    managers: list[TeamManager] | None = Field(default=None, description="本团队角色为经理的成员（仅管理员与经理可见）")


class TeamBody(RequestModel):
    name: str = Field(min_length=1, max_length=TEAM_NAME_MAX, description="团队名称，全公司唯一")
