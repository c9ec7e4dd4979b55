"""Which channels a notification goes to, why each is used or skipped, and fallbacks between them.

The policy (LEADPUSH_CHANNEL_POLICY, JSON) maps a notification kind to a list of steps. A step is a
channel ("wecom") or a fallback chain ("wechat|wecom": WeChat, and only if that cannot deliver,
WeCom). Every step is tried; within a chain exactly one channel ends up sending. "*" covers kinds
not listed; in-app is always on. Example, the default::

    {"customer_assigned": ["inapp", "wechat|wecom", "webhook"],
     "customers_assigned": ["inapp", "wechat|wecom", "webhook"],
     "*": ["inapp", "wecom", "webhook"]}

At ledger time only the first usable channel of a chain gets a delivery row. The next one's row is
created only when that delivery ends without reaching the user (skipped — e.g. no WeChat credit —
or dead), by `FallbackChannel`, which wraps every channel the dispatcher sends through.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING

from anyio import to_thread
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from leadpush.notify.channels.base import Channel, DeliveryJob, Recipient, SendResult
from leadpush.notify.models import CHANNELS, Delivery

if TYPE_CHECKING:
    from leadpush.config import Settings
    from leadpush.context import AppContext
    from leadpush.users.models import User

log = logging.getLogger(__name__)

DEFAULT_POLICY: dict[str, list[str]] = {
    "customer_assigned": ["inapp", "wechat|wecom", "webhook"],
    "customers_assigned": ["inapp", "wechat|wecom", "webhook"],
    "*": ["inapp", "wecom", "webhook"],
}
NAMES = {"inapp": "站内通知", "wechat": "微信小程序", "wecom": "企业微信", "webhook": "webhook"}

Chain = tuple[str, ...]
Policy = dict[str, tuple[Chain, ...]]


@dataclass(frozen=True)
class ChannelPlan:
    channel: str
    status: str  # pending | skipped
    reason: str


@lru_cache(maxsize=8)
def parse_policy(raw: str | None) -> Policy:
    """The default policy, with the kinds given in `raw` (JSON) replacing theirs."""
    merged: dict[str, list[str]] = dict(DEFAULT_POLICY)
    if raw and raw.strip():
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"LEADPUSH_CHANNEL_POLICY is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError("LEADPUSH_CHANNEL_POLICY must be a JSON object: kind -> list of steps")
        for kind, steps in data.items():
            if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
                raise ValueError(f"LEADPUSH_CHANNEL_POLICY[{kind!r}] must be a list of strings like 'wechat|wecom'")
            merged[kind] = steps
    policy: Policy = {}
    for kind, steps in merged.items():
        chains: list[Chain] = [("inapp",)]
        seen = {"inapp"}
        for step in steps:
            chain = tuple(c.strip() for c in step.split("|") if c.strip())
            unknown = [c for c in chain if c not in CHANNELS]
            if unknown:
                raise ValueError(
                    f"LEADPUSH_CHANNEL_POLICY: unknown channel {unknown[0]!r} (known: {', '.join(CHANNELS)})"
                )
            chain = tuple(c for c in dict.fromkeys(chain) if c not in seen)
            seen.update(chain)
            if chain:
                chains.append(chain)
        policy[kind] = tuple(chains)
    return policy


def chains_for(settings: Settings, kind: str) -> tuple[Chain, ...]:
    policy = parse_policy(settings.channel_policy)
    return policy.get(kind) or policy["*"]


def chain_of(settings: Settings, kind: str, channel: str) -> Chain:
    for chain in chains_for(settings, kind):
        if channel in chain:
            return chain
    return (channel,)


def _judge(settings: Settings, channel: str, openid: str | None, wecom_userid: str | None, self_action: bool):
    """(usable, row to record when not usable: reason or None, why usable)."""
    if channel == "inapp":
        return True, None, "站内通知始终发送"
    if channel == "webhook":
        return (True, None, "已配置出站 webhook") if settings.webhook_enabled else (False, None, "")
    address, enabled, bound = (
        (openid, settings.wechat_enabled, "用户已绑定小程序 openid")
        if channel == "wechat"
        else (wecom_userid, settings.wecom_enabled, "用户已绑定企业微信账号")
    )
    if not address:
        return False, None, ""
    if not enabled:
        return False, f"未配置{NAMES[channel]}渠道", ""
    if self_action:
        return False, "本人操作，不推送", ""
    return True, None, bound


def _describe(chain: Chain, channel: str, why: str) -> str:
    rest = chain[chain.index(channel) + 1 :]
    if not rest:
        return why
    return f"{why}；未送达时改用{'、'.join(NAMES[c] for c in rest)}（{'|'.join(chain)}，只发其一）"


def plan_deliveries(settings: Settings, kind: str, recipient: User, actor_id: int | None) -> list[ChannelPlan]:
    """One plan per step of the kind's policy: the first usable channel of each chain is pending.

    A channel the user has an address for but the deployment has not configured is recorded as
    skipped, so an operator sees why a user with an openid got no WeChat message. A user's own action
    (a claim) is not pushed to their phone, and then no fallback either.
    """
    self_action = actor_id is not None and actor_id == recipient.id
    plans: list[ChannelPlan] = []
    for chain in chains_for(settings, kind):
        for channel in chain:
            usable, skip_reason, why = _judge(
                settings, channel, recipient.wechat_openid, recipient.wecom_userid, self_action
            )
            if usable:
                plans.append(ChannelPlan(channel, "pending", _describe(chain, channel, why)[:200]))
                break
            if skip_reason:
                plans.append(ChannelPlan(channel, "skipped", skip_reason))
                if self_action:
                    break
    return plans


# --------------------------------------------------------------------------------------
# Fallback at send time
# --------------------------------------------------------------------------------------


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
                usable, skip_reason, _ = _judge(settings, channel, r.wechat_openid, r.wecom_userid, _self_action(job))
                if not usable and not skip_reason:
                    continue
                reason = f"{NAMES[job.channel]}未送达（{why}），改用{NAMES[channel]}"
                session.add(
                    Delivery(
                        notification_id=job.notification_id,
                        recipient_id=r.id,
                        channel=channel,
                        status="pending" if usable else "skipped",
                        policy=_describe(chain, channel, reason)[:200] if usable else skip_reason,
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

    async def send(self, job: DeliveryJob) -> SendResult:
        chain = chain_of(self.ctx.settings, job.kind, job.channel)
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
