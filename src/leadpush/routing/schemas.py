"""API shapes of distribution rules, their dry run, and people's availability."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator, model_validator

from leadpush.schemas import CamelModel, RequestModel
from leadpush.text import single_line

Action = Literal["round_robin", "weighted", "least_loaded", "user", "pool"]
Fallback = Literal["pool", "user"]
AppliesOn = Literal["new", "released", "recycled"]
Weekday = Literal["1", "2", "3", "4", "5", "6", "7"]
SkipReason = Literal["inactive", "at_capacity", "off_hours", "on_leave", "cooldown"]
Outcome = Literal["user", "pool", "fallback_user", "fallback_pool", "stays", "no_rule"]
MAX_ID = 2**31 - 1
TIME_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$"


def _labels(values: list[str] | None, what: str) -> list[str] | None:
    if values is None:
        return None
    cleaned = [single_line(v, what).strip() for v in values]
    if any(not v for v in cleaned):
        raise ValueError(f"{what}不能为空字符串")
    return list(dict.fromkeys(cleaned))


class DistributionMemberIn(RequestModel):
    user_id: int = Field(ge=1, le=MAX_ID)
    weight: int = Field(default=1, ge=1, le=100, description="权重（action 为 weighted 时按权重轮流）")


class DistributionRuleFields(RequestModel):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    team: str | None = Field(default=None, max_length=64, description="适用团队；空 = 全公司（仅管理员）")
    position: int | None = Field(default=None, ge=0, le=1_000_000, description="评估顺序，小的先评估")
    enabled: bool | None = None
    sources: list[str] | None = Field(default=None, max_length=100, description="来源（任一匹配；空 = 任意）")
    regions: list[str] | None = Field(default=None, max_length=100, description="地区（任一匹配；空 = 任意）")
    tags: list[str] | None = Field(default=None, max_length=100, description="标签（含任一即匹配；空 = 任意）")
    applies_on: list[AppliesOn] | None = Field(
        default=None, min_length=1, description="何时适用：new 新线索、released 被释放、recycled 被自动流转收回"
    )
    action: Action | None = Field(
        default=None,
        description="round_robin 轮流、weighted 按权重轮流、least_loaded 给线索最少的人、user 指定人、pool 放入公海",
    )
    target_user_id: int | None = Field(default=None, ge=1, le=MAX_ID, description="action 为 user 时的接收人")
    target_pool_id: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="action 为 pool 时的公海；空 = 全公司公海"
    )
    fallback: Fallback | None = Field(default=None, description="无人可接收时：pool 放入公海，user 交给指定人")
    fallback_user_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    fallback_pool_id: int | None = Field(default=None, ge=1, le=MAX_ID, description="空 = 全公司公海")
    members: list[DistributionMemberIn] | None = Field(
        default=None, max_length=500, description="轮流的成员；为空且规则属于某团队时 = 该团队的在职销售"
    )

    @field_validator("name", "team")
    @classmethod
    def _one_line(cls, v: str | None) -> str | None:
        return v if v is None else single_line(v, "规则名称或团队")

    @field_validator("sources", "regions", "tags")
    @classmethod
    def _clean(cls, v: list[str] | None) -> list[str] | None:
        for item in v or []:
            if len(item) > 100:
                raise ValueError("每一项不能超过 100 个字符")
        return _labels(v, "条件")

    @model_validator(mode="after")
    def _unique_members(self) -> DistributionRuleFields:
        if self.members is not None and len({m.user_id for m in self.members}) != len(self.members):
            raise ValueError("成员不能重复")
        if self.applies_on is not None:
            self.applies_on = list(dict.fromkeys(self.applies_on))
        return self


class DistributionRuleCreate(DistributionRuleFields):
    name: str = Field(min_length=1, max_length=100)
    action: Action


class DistributionReorderBody(RequestModel):
    rule_ids: list[int] = Field(min_length=1, max_length=1000, description="规则 id，按新的评估顺序")


class DistributionMemberOut(CamelModel):
    user_id: int
    name: str
    team: str | None
    active: bool
    weight: int


class DistributionRuleOut(CamelModel):
    id: int
    name: str
    position: int
    enabled: bool
    team: str | None
    sources: list[str]
    regions: list[str]
    tags: list[str]
    applies_on: list[AppliesOn]
    action: Action
    target_user_id: int | None
    target_user_name: str | None
    target_pool_id: int | None
    target_pool_name: str | None
    fallback: Fallback
    fallback_user_id: int | None
    fallback_user_name: str | None
    fallback_pool_id: int | None
    fallback_pool_name: str | None
    members: list[DistributionMemberOut]
    created_at: datetime
    updated_at: datetime


class DistributionDryRunBody(RequestModel):
    source: str = Field(default="", max_length=100)
    region: str = Field(default="", max_length=64)
    tags: list[str] = Field(default_factory=list, max_length=100)
    applies_on: AppliesOn = Field(default="new", description="把这条线索当作新线索、被释放的还是被收回的")
    team: str | None = Field(default=None, max_length=64, description="线索所属团队（经理默认本团队）")


class DistributionCandidateOut(CamelModel):
    user_id: int
    name: str
    status: Literal["chosen", "skipped", "available"]
    reason: SkipReason | None = None
    reason_text: str | None = None


class DistributionDryRunOut(CamelModel):
    matched: bool
    rule_id: int | None = None
    rule_name: str | None = None
    action: Action | None = None
    outcome: Outcome
    assignee_id: int | None = None
    assignee_name: str | None = None
    pool_id: int | None = Field(default=None, description="放入的公海；空 = 全公司公海")
    pool_name: str | None = None
    candidates: list[DistributionCandidateOut] = Field(default_factory=list)
    summary: str = Field(description="一句话说明谁会收到这条线索")


class AvailabilityIn(RequestModel):
    working_hours: dict[Weekday, list[tuple[str, str]]] | None = Field(
        default=None,
        description='每周工作时间（LEADPUSH_TIMEZONE），如 {"1": [["09:00", "18:00"]]}；1 = 周一 … 7 = 周日；'
        "未列出的日子不接收；null = 随时",
    )
    leave_from: datetime | None = Field(default=None, description="休假开始（空 = 立即）")
    leave_until: datetime | None = Field(default=None, description="休假结束（空 = 直到取消）")

    @field_validator("working_hours")
    @classmethod
    def _ranges(cls, v: dict[str, list[tuple[str, str]]] | None) -> dict[str, list[tuple[str, str]]] | None:
        import re

        if v is None:
            return None
        for ranges in v.values():
            if len(ranges) > 10:
                raise ValueError("每天最多 10 个时间段")
            for start, end in ranges:
                if not re.match(TIME_PATTERN, start) or not re.match(TIME_PATTERN, end):
                    raise ValueError("时间必须是 HH:MM（00:00 到 24:00）")
                if start >= end:
                    raise ValueError("开始时间必须早于结束时间（跨午夜请分成两天填写）")
        return v

    @model_validator(mode="after")
    def _leave(self) -> AvailabilityIn:
        for when in (self.leave_from, self.leave_until):
            if when is not None and when.tzinfo is None:
                raise ValueError("休假时间必须带时区，如 2026-12-01T09:00:00+08:00")
            if when is not None and not 2000 <= when.year <= 2999:
                raise ValueError("休假时间必须在 2000 年到 2999 年之间")
        if self.leave_from and self.leave_until and self.leave_from >= self.leave_until:
            raise ValueError("休假结束必须晚于开始")
        return self


class AvailabilityOut(CamelModel):
    user_id: int
    user_name: str
    working_hours: dict[str, list[list[str]]] | None
    leave_from: datetime | None
    leave_until: datetime | None
    timezone: str
    available_now: bool
    reason: SkipReason | None = Field(default=None, description="现在不能接收分配的原因")
    reason_text: str | None = None
