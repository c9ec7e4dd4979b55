"""API shapes of transfer rules and runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, field_validator, model_validator

from leadpush.leads.models import STATUSES
from leadpush.schemas import CamelModel, RequestModel
from leadpush.text import single_line
from leadpush.transfer.models import ACTIONS, CONDITIONS


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
        description="未能流转的线索，各含 ruleId、ruleName（规则现在的名称；规则已删除时为 null 且 ruleDeleted 为 true）和 reason",
    )


class RunPage(CamelModel):
    items: list[RunOut]
    total: int
    page: int
    page_size: int
