"""API shapes of notifications and deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from leadpush.schemas import CamelModel, RequestModel


class NotificationOut(CamelModel):
    id: int
    type: str
    title: str
    body: str
    data: dict[str, Any]
    created_at: datetime
    read_at: datetime | None
    delivered_at: datetime | None


class NotificationPage(CamelModel):
    items: list[NotificationOut]
    last_id: int = Field(description="下次轮询时作为 after 传入")
    unread: int


class MarkReadBody(RequestModel):
    ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] | None = Field(
        default=None, max_length=1000, description="不传则全部标为已读"
    )


class UnreadOut(CamelModel):
    unread: int


# notify.models.STATUSES and CHANNELS, spelled out so OpenAPI lists the values.
DeliveryStatus = Literal["pending", "sending", "sent", "failed", "dead", "skipped", "merged"]
DeliveryChannel = Literal["inapp", "wechat", "wecom", "webhook"]
AttemptOutcome = Literal["sent", "retry", "permanent", "skipped"]


class DeliveryOut(CamelModel):
    id: int
    notification_id: int
    notification_type: str
    title: str
    recipient_id: int
    recipient_name: str
    channel: DeliveryChannel
    status: DeliveryStatus
    attempts: int = Field(description="已尝试发送的次数（逐次记录见 GET /api/deliveries/{id}）")
    next_attempt_at: datetime | None
    last_error: str | None
    policy: str | None = Field(description="为何使用或跳过该渠道")
    provider_id: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    hold_reason: str | None = Field(default=None, description="待发送的消息为何还在等待（免打扰时段、合并窗口）")
    merged_into: int | None = Field(default=None, description="已合并（merged）时：携带它的投递编号")
    folds: list[int] = Field(default_factory=list, description="摘要投递：一并携带的其他通知编号")


class DeliveryAttemptOut(CamelModel):
    """One try of a delivery."""

    attempt: int = Field(description="第几次尝试（管理员重新发送后从 1 重新计数）")
    started_at: datetime | None = Field(description="领取（开始发送）的时间")
    finished_at: datetime
    outcome: AttemptOutcome = Field(
        description="渠道的回答：sent 已发送 / retry 稍后重试 / permanent 无法发送 / skipped 未发送"
    )
    status: DeliveryStatus = Field(description="这次尝试之后投递的状态")
    errcode: int | None = Field(description="微信 / 企业微信返回的 errcode（有的话）")
    detail: str | None
    worker: str | None = Field(description="执行发送的进程（workers.id）")


class DeliveryDetail(CamelModel):
    delivery: DeliveryOut
    attempts: list[DeliveryAttemptOut] = Field(description="每一次尝试，最早的在前")


class DeliveryPage(CamelModel):
    items: list[DeliveryOut]
    total: int
    page: int
    page_size: int
