"""The one interface every channel implements: send a delivery, say what happened."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

Outcome = Literal["sent", "retry", "permanent", "skipped"]


@dataclass(frozen=True)
class Recipient:
    id: int
    name: str
    wechat_openid: str | None
    wecom_userid: str | None


@dataclass(frozen=True)
class DeliveryJob:
    """One claimed delivery: everything a channel needs, read before any network call."""

    delivery_id: int
    channel: str
    attempts: int
    lease_until: datetime
    notification_id: int
    prev_id: int | None
    kind: str
    title: str
    body: str
    payload: dict[str, Any]
    created_at: datetime
    recipient: Recipient


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    detail: str = ""
    provider_id: str | None = None
    # For "retry": the earliest sensible next try (seconds), e.g. a daily quota; None = normal backoff.
    retry_after: float | None = None

    @classmethod
    def sent(cls, provider_id: str | None = None, detail: str = "") -> SendResult:
        return cls("sent", detail, provider_id)

    @classmethod
    def retry(cls, detail: str, retry_after: float | None = None) -> SendResult:
        return cls("retry", detail, retry_after=retry_after)

    @classmethod
    def permanent(cls, detail: str) -> SendResult:
        return cls("permanent", detail)

    @classmethod
    def skipped(cls, detail: str) -> SendResult:
        return cls("skipped", detail)


class Channel(Protocol):
    name: str

    async def send(self, job: DeliveryJob) -> SendResult: ...

    async def aclose(self) -> None: ...


def ws_message(job: DeliveryJob) -> dict[str, Any]:
    """The in-app message shape (WebSocket and long-poll share it through NotificationOut)."""
    return {
        "id": job.notification_id,
        "prevId": job.prev_id,
        "type": job.kind,
        "title": job.title,
        "body": job.body,
        "createdAt": job.created_at.isoformat().replace("+00:00", "Z"),
        "data": job.payload,
        "readAt": None,
        "deliveredAt": None,
    }
