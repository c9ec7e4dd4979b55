"""The one interface every channel implements: send a delivery, say what happened."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
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
    lease_holder: str | None = None  # the worker that claimed it (workers.id)
    claimed_at: datetime | None = None  # when this attempt's claim happened (the attempt history's start)
    # A digest: the other notifications this delivery carries (folded at claim; see notify/digest.py).
    folded: tuple[FoldedNote, ...] = ()
    # Set when the notification was read before this claim; a notice about the recipient's own action
    # (a claim) is born read. The page pops up a toast only for a message without it.
    read_at: datetime | None = None
    # Read by the claim, for the send-time fallback (notify.fallback), so a send reads nothing more for it:
    # the delivery's "one of" chain as its recipient's choices shape it, and the notification's other
    # deliveries (channel, status). None: not read (a job built elsewhere); the fallback reads them itself.
    chain: tuple[str, ...] | None = None
    siblings: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True)
class FoldedNote:
    """A notification carried by another delivery's digest message."""

    notification_id: int
    kind: str
    title: str
    body: str
    payload: dict[str, Any]
    created_at: datetime


def lease_left(job: DeliveryJob, now: datetime) -> float:
    """Seconds until the job's lease runs out: a channel starts no send it could not finish by then."""
    return (job.lease_until - now).total_seconds()


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    detail: str = ""
    provider_id: str | None = None
    # For "retry": the earliest sensible next try (seconds), e.g. a daily quota; None = normal backoff.
    retry_after: float | None = None
    # The platform's errcode when it answered with one (kept in the delivery's attempt history).
    errcode: int | None = None
    # For "retry": the channel cannot deliver for a long while (WeChat's daily quota). When its chain has a
    # usable next channel, `notify.fallback` hands over now: this delivery ends skipped ("<give_way>，已改用…")
    # and the next channel gets its row at once, instead of waiting for `retry_after`.
    give_way: str | None = None

    @classmethod
    def sent(cls, provider_id: str | None = None, detail: str = "", errcode: int | None = None) -> SendResult:
        return cls("sent", detail, provider_id, errcode=errcode)

    @classmethod
    def retry(cls, detail: str, retry_after: float | None = None, errcode: int | None = None) -> SendResult:
        return cls("retry", detail, retry_after=retry_after, errcode=errcode)

    @classmethod
    def permanent(cls, detail: str, errcode: int | None = None) -> SendResult:
        return cls("permanent", detail, errcode=errcode)

    @classmethod
    def skipped(cls, detail: str) -> SendResult:
        return cls("skipped", detail)


class Channel(Protocol):
    name: str

    async def send(self, job: DeliveryJob) -> SendResult: ...

    async def aclose(self) -> None: ...


def retry_after_seconds(header: str | None, now: datetime, cap: float) -> float | None:
    """An HTTP Retry-After header as seconds to wait, at most `cap`; None = use the normal backoff.

    The header comes from someone else's server: delay-seconds (plain digits) or an HTTP-date. Anything
    else (negative, fractional, NaN, inf, garbage, a date in the past) is ignored rather than trusted,
    and a huge value is capped so one answer cannot park a delivery for years.
    """
    if header is None:
        return None
    value = header.strip()
    if value.isascii() and value.isdigit():
        seconds = float(min(int(value[:20]), 10**15))
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            return None
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return min(seconds, cap)


def utc_iso(moment: datetime | None) -> str | None:
    """A UTC moment as the API writes it ("...Z"); None stays None."""
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def ws_message(job: DeliveryJob) -> dict[str, Any]:
    """The in-app message shape (WebSocket and long-poll share it through NotificationOut)."""
    return {
        "id": job.notification_id,
        "prevId": job.prev_id,
        "type": job.kind,
        "title": job.title,
        "body": job.body,
        "createdAt": utc_iso(job.created_at),
        "data": job.payload,
        "readAt": utc_iso(job.read_at),
        "deliveredAt": None,
    }
