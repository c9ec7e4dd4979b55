"""In-app channel: publish to every live connection of the recipient (this process or, via Redis, all)."""

from __future__ import annotations

from leadpush.notify.bus import Bus
from leadpush.notify.channels.base import DeliveryJob, SendResult, ws_message


class InAppChannel:
    name = "inapp"

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def send(self, job: DeliveryJob) -> SendResult:
        try:
            await self.bus.publish_inapp(job.recipient.id, ws_message(job))
        except Exception as exc:  # noqa: BLE001 - a bus outage is transient; the client also catches up by id
            return SendResult.retry(f"发布失败：{type(exc).__name__}")
        return SendResult.sent()

    async def aclose(self) -> None:
        return None
