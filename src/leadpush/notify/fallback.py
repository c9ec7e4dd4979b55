"""Fallback at send time: the policy's "one of" chains ("wechat|wecom") applied around every channel.

At ledger time only the first usable channel of a chain gets a delivery row (`policy.plan_deliveries`).
When that delivery ends without reaching the user (skipped — e.g. no WeChat credit — or dead),
`create_fallback` gives the chain's next usable channel a row; `FallbackChannel` wraps each channel
the dispatcher sends through, so that a channel never sends what another of its chain already sent.
"""

from __future__ import annotations

import logging
from datetime import datetime

from anyio import to_thread
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from leadpush.context import AppContext
from leadpush.notify.channels.base import Channel, DeliveryJob, Recipient, SendResult
from leadpush.notify.models import Delivery
from leadpush.notify.policy import NAMES, PERSONAL_CHANNELS, Chain, describe, judge
from leadpush.notify.preferences import chain_for

log = logging.getLogger(__name__)


def _self_action(job: DeliveryJob) -> bool:
    actor = job.payload.get("actorId")
    return actor is not None and actor == job.recipient.id


def create_fallback(ctx: AppContext, job: DeliveryJob, chain: Chain, why: str, now: datetime) -> str | None:
    """After `job` ended without reaching the user, give the next usable channel of its chain a row.

    Fenced like the dispatcher's own writes: nothing happens unless this worker still holds the
    delivery. Idempotent: a second call finds the row already there. Returns the channel used.
    """
    settings = ctx.settings
    rest = chain[chain.index(job.channel) + 1 :] if job.channel in chain else ()
    if not rest:
        return None
    r: Recipient = job.recipient
    try:
        with ctx.db.write() as session:
            mine = session.scalar(
                select(Delivery.id).where(
                    Delivery.id == job.delivery_id, Delivery.status == "sending", Delivery.attempts == job.attempts
                )
            )
            if mine is None:
                return None
            existing = set(
                session.scalars(select(Delivery.channel).where(Delivery.notification_id == job.notification_id))
            )
            for channel in rest:
                if channel in existing:
                    return None  # a fallback was already created (an earlier attempt got this far)
                usable, skip_reason, _ = judge(settings, channel, r.wechat_openid, r.wecom_userid, _self_action(job))
                if not usable and not skip_reason:
                    continue
                reason = f"{NAMES[job.channel]}未送达（{why}），改用{NAMES[channel]}"
                session.add(
                    Delivery(
                        notification_id=job.notification_id,
                        recipient_id=r.id,
                        channel=channel,
                        status="pending" if usable else "skipped",
                        policy=describe(chain, channel, reason)[:200] if usable else skip_reason,
                        next_attempt_at=now if usable else None,
                        created_at=now,
                        updated_at=now,
                    )
                )
                if usable:
                    return channel
            return None
    except IntegrityError:
        return None  # created concurrently by another worker


def sent_alternative(ctx: AppContext, job: DeliveryJob, chain: Chain) -> str | None:
    """Another channel of the same chain already reached (or is about to reach) the user for this
    notification — e.g. an admin retried a dead WeChat delivery after WeCom had taken over. Then this
    one must not send. An earlier channel counts only once sent: while it is still `sending` it is
    the very delivery whose failure created this one."""
    position = chain.index(job.channel) if job.channel in chain else 0
    earlier, later = chain[:position], chain[position + 1 :]
    if not earlier and not later:
        return None
    with ctx.db.read() as session:
        rows = session.execute(
            select(Delivery.channel, Delivery.status).where(
                Delivery.notification_id == job.notification_id,
                Delivery.channel.in_(earlier + later),
                Delivery.id != job.delivery_id,
            )
        ).all()
    for channel, status in rows:
        if status == "sent" or (channel in later and status in ("pending", "sending", "failed")):
            return channel
    return None


class FallbackChannel:
    """Wraps a channel: applies the policy's "one of" chains around its sends."""

    def __init__(self, inner: Channel, ctx: AppContext) -> None:
        self.inner = inner
        self.ctx = ctx
        self.name = inner.name

    def chain_of(self, job: DeliveryJob) -> Chain:
        """The job's chain as its recipient's channel choices shape it (see notify.preferences)."""
        settings = self.ctx.settings
        if job.channel not in PERSONAL_CHANNELS:
            return settings.channel_policy.chain_of(job.kind, job.channel)
        with self.ctx.db.read() as session:
            return chain_for(settings, session, job.kind, job.channel, job.recipient.id)

    async def send(self, job: DeliveryJob) -> SendResult:
        chain = await to_thread.run_sync(self.chain_of, job)
        if len(chain) == 1:
            return await self.inner.send(job)
        other = await to_thread.run_sync(sent_alternative, self.ctx, job, chain)
        if other is not None:
            return SendResult.skipped(f"已改由{NAMES.get(other, other)}发送，不再重复")
        result = await self.inner.send(job)
        final = result.outcome in ("skipped", "permanent") or (
            result.outcome == "retry" and job.attempts >= self.ctx.settings.delivery_max_attempts
        )
        if final:
            now = self.ctx.clock.now()
            used = await to_thread.run_sync(create_fallback, self.ctx, job, chain, result.detail[:60], now)
            if used is not None:
                log.info("投递 %s（%s）未送达，改用 %s", job.delivery_id, job.channel, used)
        return result

    async def aclose(self) -> None:
        await self.inner.aclose()
