"""API shapes of notifications and deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

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


class DeliveryOut(CamelModel):
    id: int
    notification_id: int
    notification_type: str
    title: str
    recipient_id: int
    recipient_name: str
    channel: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    policy: str | None = Field(description="为何使用或跳过该渠道")
    provider_id: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None


class DeliveryPage(CamelModel):
    items: list[DeliveryOut]
    total: int
    page: int
    page_size: int
