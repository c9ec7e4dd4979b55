"""API shapes of transfer rules and runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from leadpush.leads.models import STATUSES
from leadpush.schemas import CamelModel, RequestModel
from leadpush.text import single_line
from leadpush.transfer.models import ACTIONS, CONDITIONS

GRACE_MAX_HOURS = 720


class RuleFields(RequestModel):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    team: str | None = Field(default=None, max_length=64, description="空 = 全公司")
    condition: str | None = Field(default=None, description=" / ".join(CONDITIONS))
    threshold_hours: float | None = Field(default=None, gt=0, le=24 * 3650)
    threshold_days: float | None = Field(default=None, gt=0, le=3650)
    exempt_statuses: list[str] | None = Field(default=None, max_length=10)
    action: str | None = Field(default=None, description=" / ".join(ACTIONS))
    target_user_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    warn_before_hours: float | None = Field(default=None, ge=0, le=24 * 3650)
    enabled: bool | None = None
    grace_hours: float | None = Field(
        default=None,
        ge=0,
        le=GRACE_MAX_HOURS,
        description="宽限期（小时）：保存时规则会立即流转或在宽限期内到期的线索，改为在宽限期结束时流转（之前照常预警）；0 = 取消宽限",
    )

    @field_validator("name", "team")
    @classmethod
    def _one_line(cls, v: str | None) -> str | None:
        return v if v is None else single_line(v, "规则名称或团队")

    @model_validator(mode="after")
    def _check(self) -> RuleFields:
        if self.condition is not None and self.condition not in CONDITIONS:
            raise ValueError(f"condition 必须是 {' / '.join(CONDITIONS)} 之一")
        if self.action is not None and self.action not in ACTIONS:
            raise ValueError(f"action 必须是 {' / '.join(ACTIONS)} 之一")
        if self.threshold_hours is not None and self.threshold_days is not None:
            raise ValueError("thresholdHours 与 thresholdDays 只能填一个")
        for status in self.exempt_statuses or []:
            if status not in STATUSES:
                raise ValueError(f"豁免状态必须是 {' / '.join(STATUSES)} 之一")
        return self

    def hours(self) -> float | None:
        if self.threshold_days is not None:
            return self.threshold_days * 24
        return self.threshold_hours


class RuleCreate(RuleFields):
    name: str = Field(min_length=1, max_length=100)
    condition: str
    action: str

    @model_validator(mode="after")
    def _required(self) -> RuleCreate:
        if self.hours() is None:
            raise ValueError("需要 thresholdHours 或 thresholdDays")
        return self


class RuleOut(CamelModel):
    id: int
    name: str
    team: str | None
    condition: str
    threshold_hours: float
    threshold_days: float
    exempt_statuses: list[str]
    action: str
    target_user_id: int | None
    target_user_name: str | None = Field(default=None, description="action 为 user 时：接收人姓名")
    warn_before_hours: float | None
    enabled: bool
    created_at: datetime
    grace_until: datetime | None = Field(default=None, description="宽限期结束时间（保存时给了宽限期）")


class RulePreviewBody(RuleFields):
    """A rule as for create, or the changes of a PATCH with the rule's `id`."""

    id: int | None = Field(default=None, ge=1, le=2**31 - 1, description="预览对已有规则的修改时：规则 id")


class PreviewItem(CamelModel):
    customer_id: int
    customer_name: str
    team: str | None
    from_user_id: int | None
    from_user_name: str | None
    to_user_id: int | None = Field(description="流转去向；null = 公海")
    to_user_name: str | None
    due_at: datetime
    outcome: Literal["move", "warn", "fail"] = Field(description="move 立即流转 / warn 立即预警 / fail 到期但无法流转")
    reason: str


class TeamCounts(CamelModel):
    moved: int = 0
    warned: int = 0
    failed: int = 0


class RulePreviewOut(CamelModel):
    moved: int = Field(description="保存后立即流转的线索数")
    warned: int = Field(description="保存后立即收到流转预警的线索数")
    failed: int = Field(description="保存后立即到期、但无法流转（将稍后重试）的线索数")
    graced: int = Field(description="因宽限期而推迟到宽限期结束的线索数")
    grace_until: datetime | None
    teams: dict[str, TeamCounts] = Field(description='按负责人团队（"" = 无团队）')
    items: list[PreviewItem] = Field(description="示例（最多 20 条）")


class RunBody(RequestModel):
    dry_run: bool = False


class RunOut(CamelModel):
    id: int | None
    trigger: str
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None
    examined: int
    moved: int
    warned: int
    failed: int
    items: list[dict[str, Any]] = Field(default_factory=list, description="演练时列出将要流转的线索")
    failures: list[dict[str, Any]] = Field(
        default_factory=list,
        description=(
            "未能流转的线索，各含 ruleId、ruleName（规则现在的名称；规则已删除时为 null 且 ruleDeleted 为 true）、reason"
            " 和 retryAt（下次重试时间；重试间隔逐次加倍，最长一天，重试再失败不再重复记录）"
        ),
    )


class RunPage(CamelModel):
    items: list[RunOut]
    total: int
    page: int
    page_size: int
