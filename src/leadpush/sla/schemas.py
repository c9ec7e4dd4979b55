"""API shapes of first-contact SLA rules and the speed-to-lead report."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator

from leadpush.schemas import CamelModel, RequestModel
from leadpush.text import single_line

ReassignAction = Literal["next", "pool"]
Minutes = int | None
MAX_MINUTES = 30 * 24 * 60


class SlaRuleFields(RequestModel):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    team: str | None = Field(default=None, max_length=64, description="负责人所在团队；空 = 全公司")
    sources: list[str] | None = Field(default=None, max_length=50, description="只对这些来源的线索生效；空 = 全部")
    remind_after_minutes: Minutes = Field(default=None, ge=1, le=MAX_MINUTES, description="N：提醒负责人")
    manager_after_minutes: Minutes = Field(default=None, ge=1, le=MAX_MINUTES, description="M：通知团队经理")
    reassign_after_minutes: Minutes = Field(default=None, ge=1, le=MAX_MINUTES, description="K：改派或退回线索池")
    reassign_action: ReassignAction | None = Field(default=None, description="next = 轮转给下一位；pool = 退回线索池")
    enabled: bool | None = None

    @field_validator("name", "team")
    @classmethod
    def _one_line(cls, v: str | None) -> str | None:
        return v if v is None else single_line(v, "规则名称或团队").strip()

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        cleaned = [single_line(s, "来源").strip() for s in v]
        if any(len(s) > 100 for s in cleaned):
            raise ValueError("来源不能超过 100 个字符")
        return list(dict.fromkeys(s for s in cleaned if s))


class SlaRuleCreate(SlaRuleFields):
    name: str = Field(min_length=1, max_length=100)
    reassign_action: ReassignAction = "next"


class SlaRuleOut(CamelModel):
    id: int
    name: str
    team: str | None
    sources: list[str]
    remind_after_minutes: int | None
    manager_after_minutes: int | None
    reassign_after_minutes: int | None
    reassign_action: ReassignAction
    enabled: bool
    created_at: datetime


GroupBy = Literal["person", "team"]


class SpeedRow(CamelModel):
    key: str = Field(description="person：用户 id；team：团队名（无团队为空串）")
    name: str
    team: str | None = None
    assignments: int = Field(description="期间分配给该组的线索次数")
    opened: int = Field(description="其中已打开的次数")
    median_open_seconds: float | None
    p90_open_seconds: float | None
    median_follow_up_seconds: float | None = Field(description="分配到首次跟进用时的中位数")
    followed_up: int
    with_sla: int = Field(description="分配时有首次联系规则（N）的次数")
    opened_within_sla: int
    opened_within_sla_share: float | None = Field(description="有规则的分配中，在 N 分钟内打开的比例（0–1）")
    unopened: int = Field(description="仍在其名下且尚未打开")


class SpeedReport(CamelModel):
    group_by: GroupBy
    from_: datetime = Field(alias="from")
    to: datetime
    rows: list[SpeedRow]
    total: SpeedRow
