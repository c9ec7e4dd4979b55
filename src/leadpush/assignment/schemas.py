"""API shapes of assignments."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from leadpush.leads.schemas import CustomerOut, Id
from leadpush.schemas import CamelModel, RequestModel
from leadpush.text import single_line
from leadpush.users.service import clean_text


class AssignBody(RequestModel):
    assigned_to: Id = Field(description="接收线索的用户 id")
    version: Id | None = Field(default=None, description="乐观锁：页面上看到的线索版本号，可选")


class BatchAssignBody(RequestModel):
    customer_ids: list[Id] = Field(description="线索 id 列表，最多 1000 个")
    assigned_to: Id


class ReleaseBody(RequestModel):
    reason: str | None = Field(default=None, max_length=200)

    @field_validator("reason")
    @classmethod
    def _reason(cls, v: str | None) -> str | None:
        return clean_text(v and single_line(v, "原因")) or None


class AssignedCustomer(CustomerOut):
    notification_data: dict[str, Any] | None = None


class ItemFailureOut(CamelModel):
    customer_id: int
    code: str
    message: str


class BatchResult(CamelModel):
    batch_id: str | None
    customers: list[CustomerOut]
    unchanged: list[int]
    failed: list[ItemFailureOut]
    notification_data: list[dict[str, Any]]


class AssignmentOut(CamelModel):
    id: int
    customer_id: int
    from_user_id: int | None
    from_user_name: str | None = None
    to_user_id: int | None
    to_user_name: str | None = None
    actor_id: int | None
    actor_name: str | None = None
    via: str
    batch_id: str | None
    reason: str | None
    created_at: datetime


Via = Literal["web", "miniprogram", "batch", "public_pool", "claim", "release", "auto_transfer", "route", "escalation"]


class TakenBackOut(CamelModel):
    """How a lead left someone who may no longer see it: what they were told then, nothing of it now.

    The `data` of the 404 `customer_recycled` answer (GET /api/customers/{id}) to a former owner.
    """

    customer_id: int
    taken_back_at: datetime = Field(description="何时被收回")
    via: Via = Field(description="收回方式：auto_transfer 自动流转、release 释放到公海、其他为重新分配")
    rule_name: str | None = Field(description="自动流转时：规则名称")
    actor_id: int | None = Field(description="操作人；null = 系统（自动流转）")
    actor_name: str | None
    by_you: bool = Field(description="是否本人操作（本人释放到公海）")
    to_pool: bool = Field(description="true = 退回公海；false = 转给了其他同事（不透露是谁）")
    reason: str | None = Field(description="当时告知的原因")
