"""Fallback at send time: the policy's "one of" chains ("wechat|wecom") applied around every channel.

At ledger time only the first usable channel of a chain gets a delivery row (`policy.plan_deliveries`).
When that delivery ends without reaching the user (skipped — e.g. no WeChat credit — or dead),
`create_fallback` gives the chain's next usable channel a row; `FallbackChannel` wraps each channel
the dispatcher sends through, so that a channel never sends what another of its chain already sent.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from anyio import to_thread
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.notify.channels.base import Channel, DeliveryJob, Recipient, SendResult
from leadpush.notify.models import Delivery
from leadpush.notify.policy import NAMES, PERSONAL_CHANNELS, Chain, describe, judge
from leadpush.notify.preferences import chain_for, chain_with, choices_of

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
                folds = carried_on(session, job, channel) if usable else []
                session.add(
                    Delivery(
                        notification_id=job.notification_id,
                        recipient_id=r.id,
                        channel=channel,
                        status="pending" if usable else "skipped",
                        policy=describe(chain, channel, reason)[:200] if usable else skip_reason,
                        next_attempt_at=now if usable else None,
                        # A digest falls back as a digest: the next channel carries the same notices.
                        folds=folds or None,
                        created_at=now,
                        updated_at=now,
                    )
                )
                if usable:
                    return channel
            return None
    except IntegrityError:
        return None  # created concurrently by another worker


def carried_on(session: Session, job: DeliveryJob, channel: str) -> list[int]:
    """What a digest's fallback on `channel` carries: the same notices (notify/digest.py), but for any that
    has a delivery of its own on that channel (it reaches the person there anyway)."""
    folds = sorted({n.notification_id for n in job.folded})
    if not folds:
        return []
    own = set(
        session.scalars(
            select(Delivery.notification_id).where(Delivery.notification_id.in_(folds), Delivery.channel == channel)
        )
    )
    return [f for f in folds if f not in own]


@dataclass(frozen=True)
class Claimed:
    """What the fallback needs of a claimed delivery (see `read_at_claim`)."""

    delivery_id: int
    notification_id: int
    channel: str
    kind: str
    recipient_id: int


def read_at_claim(
    settings: Settings, session: Session, claimed: Sequence[Claimed]
) -> dict[int, tuple[Chain, tuple[tuple[str, str], ...]]]:
    """For each claimed delivery but in-app ones (by id): its chain and its notification's other deliveries
    (channel, status), read in the claim's transaction (one statement, plus the recipients' choices unless
    cached) instead of a read transaction per send. The claim has marked its rows `sending` already, so a
    sibling claimed with it reads as it would at its send."""
    wanted = [c for c in claimed if c.channel != "inapp"]
    if not wanted:
        return {}
    people = {c.recipient_id for c in wanted if c.channel in PERSONAL_CHANNELS}
    choices = choices_of(session, people) if people else {}
    others: dict[int, list[tuple[int, str, str]]] = defaultdict(list)
    rows = session.execute(
        select(Delivery.notification_id, Delivery.id, Delivery.channel, Delivery.status).where(
            Delivery.notification_id.in_(sorted({c.notification_id for c in wanted}))
        )
    ).all()
    for n_id, d_id, channel, status in rows:
        others[n_id].append((d_id, channel, status))
    out: dict[int, tuple[Chain, tuple[tuple[str, str], ...]]] = {}
    for c in wanted:
        if c.channel in PERSONAL_CHANNELS:
            chain = chain_with(settings, choices.get(c.recipient_id), c.kind, c.channel)
        else:
            chain = settings.channel_policy.chain_of(c.kind, c.channel)
        siblings = tuple((ch, st) for d, ch, st in others[c.notification_id] if d != c.delivery_id)
        out[c.delivery_id] = (chain, siblings)
    return out


def sent_alternative(ctx: AppContext, job: DeliveryJob, chain: Chain) -> str | None:
    """Another channel of the same chain already reached (or is about to reach) the user for this
    notification — e.g. an admin retried a dead WeChat delivery after WeCom had taken over. Then this
    one must not send. An earlier channel counts only once sent: while it is still `sending` it is
    the very delivery whose failure created this one. Reads nothing when the claim read the siblings."""
    position = chain.index(job.channel) if job.channel in chain else 0
    earlier, later = chain[:position], chain[position + 1 :]
    if not earlier and not later:
        return None
    rows: Sequence[tuple[str, str]]
    if job.siblings is not None:
        rows = [(channel, status) for channel, status in job.siblings if channel in earlier + later]
    else:
        with ctx.db.read() as session:
            rows = [
                (channel, status)
                for channel, status in session.execute(
                    select(Delivery.channel, Delivery.status).where(
                        Delivery.notification_id == job.notification_id,
                        Delivery.channel.in_(earlier + later),
                        Delivery.id != job.delivery_id,
                    )
                )
            ]
    for channel, status in rows:
        if status == "sent" or (channel in later and status in ("pending", "sending", "failed")):
            return channel
    return None


def next_usable(ctx: AppContext, job: DeliveryJob, chain: Chain) -> str | None:
    """The first channel after `job`'s in its chain that could reach the user now (bound and configured)."""
    r = job.recipient
    rest = chain[chain.index(job.channel) + 1 :] if job.channel in chain else ()
    for channel in rest:
        if judge(ctx.settings, channel, r.wechat_openid, r.wecom_userid, _self_action(job)).usable:
            return channel
    return None


def give_way(ctx: AppContext, job: DeliveryJob, chain: Chain, why: str, now: datetime) -> str | None:
    """Hand `job` over to its chain's next usable channel now (e.g. WeChat's quota is used up for today).

    Returns that channel once its row exists (created now, or by an earlier attempt of this delivery), or
    None when the chain has no usable next channel: then the delivery keeps waiting instead.
    """
    target = next_usable(ctx, job, chain)
    if target is None:
        return None
    used = create_fallback(ctx, job, chain, why, now)
    if used is not None:
        return used
    with ctx.db.read() as session:
        there = session.scalar(
            select(Delivery.id).where(Delivery.notification_id == job.notification_id, Delivery.channel == target)
        )
    return target if there is not None else None


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

    def _before_send(self, job: DeliveryJob) -> tuple[Chain, str | None]:
        chain = self.chain_of(job)
        return chain, (sent_alternative(self.ctx, job, chain) if len(chain) > 1 else None)

    async def send(self, job: DeliveryJob) -> SendResult:
        if job.chain is not None and job.siblings is not None:
            # Read by the claim: nothing to read here, no thread hop.
            chain: Chain = job.chain
            other = sent_alternative(self.ctx, job, chain) if len(chain) > 1 else None
        else:
            chain, other = await to_thread.run_sync(self._before_send, job)
        if len(chain) == 1:
            return await self.inner.send(job)
        if other is not None:
            return SendResult.skipped(f"已改由{NAMES.get(other, other)}发送，不再重复")
        result = await self.inner.send(job)
        if result.outcome == "retry" and result.give_way:
            # The channel cannot deliver for a long while: hand over now if the chain can, else wait.
            now = self.ctx.clock.now()
            used = await to_thread.run_sync(give_way, self.ctx, job, chain, result.give_way, now)
            if used is not None:
                log.info("投递 %s（%s）暂不可用，已改用 %s", job.delivery_id, job.channel, used)
                detail = f"{result.give_way}，已改用{NAMES.get(used, used)}"
                return SendResult("skipped", detail, errcode=result.errcode)
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
