"""Outbound webhook channel: an HMAC-signed JSON POST to an integration's URL."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import datetime

import httpx

from leadpush.clock import utcnow
from leadpush.notify.channels.base import DeliveryJob, SendResult, retry_after_seconds, ws_message

RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Signature over "<timestamp>.<body>", so a captured request cannot be replayed with a new time."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookChannel:
    name = "webhook"

    def __init__(
        self,
        url: str,
        secret: str,
        timeout: float,
        retry_after_cap: float,
        client: httpx.AsyncClient | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        if not secret:
            raise ValueError("a webhook must be signed: no secret given")  # Settings refuses this first
        self.url = url
        self.secret = secret
        self.retry_after_cap = retry_after_cap
        self.now = now
        self.client = client or httpx.AsyncClient(timeout=timeout)

    async def send(self, job: DeliveryJob) -> SendResult:
        body = json.dumps(
            {
                "deliveryId": job.delivery_id,
                "recipient": {"id": job.recipient.id, "name": job.recipient.name},
                "notification": ws_message(job),
            },
            ensure_ascii=False,
        ).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            # Receivers dedupe on this id: a send caught mid-flight by a crash may arrive twice.
            "X-Leadpush-Delivery": str(job.delivery_id),
            "X-Leadpush-Timestamp": timestamp,
            "X-Leadpush-Signature": sign(self.secret, timestamp, body),
        }
        try:
            response = await self.client.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException:
            return SendResult.retry("对接系统推送超时")
        except httpx.HTTPError as exc:
            return SendResult.retry(f"对接系统推送连接失败：{type(exc).__name__}")
        if 200 <= response.status_code < 300:
            return SendResult.sent(detail=f"HTTP {response.status_code}")
        if response.status_code in RETRYABLE_STATUS:
            retry_after = retry_after_seconds(response.headers.get("retry-after"), self.now(), self.retry_after_cap)
            return SendResult.retry(f"对接系统返回 HTTP {response.status_code}", retry_after)
        return SendResult.permanent(f"对接系统拒绝：HTTP {response.status_code}")

    async def aclose(self) -> None:
        await self.client.aclose()
