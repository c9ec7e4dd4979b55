"""WeCom (企业微信) app messages: a textcard per notification, paced per member, the excess folded.

WeCom silently drops (errcode 0!) anything past 30 messages a minute or 1,000 an hour to one member,
so the channel paces itself. Each member has a sliding window of send times in the shared `kv`
table (one small locked row, so every worker process sees the same window). A delivery that finds
the window full is deferred (retry_after = until a slot frees) and marked as such; the next
delivery to that member that gets a slot claims every deferred one and sends them all as one digest
textcard, marking each folded delivery sent with the digest's msgid.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from anyio import to_thread
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from leadpush.context import AppContext
from leadpush.db import Database
from leadpush.notify.channels.base import DeliveryJob, SendResult, lease_left
from leadpush.notify.models import Delivery, KeyValue, Notification
from leadpush.notify.tokens import (
    ApiReply,
    TokenCache,
    TokenUnavailable,
    call_platform,
    call_with_token,
    retry_for,
    short_errmsg,
)
from leadpush.notify.wechat_format import clean_text, format_time, mask_phone

log = logging.getLogger(__name__)

SEND_PATH = "/cgi-bin/message/send"
PACE_DEFERRED = "企业微信限速延后"
TITLE_BYTES = 128
DESCRIPTION_BYTES = 512
ASSIGNED_KINDS = ("customer_assigned", "customers_assigned")


def one_line(value: Any) -> str:
    """A stored value as one line of a card: line breaks (CR, LF, U+0085, U+2028/9) and bidi controls
    in data written before input refused them, or by another system, must not fake card lines."""
    return clean_text(str(value or ""))


def cut_bytes(text: str, limit: int) -> str:
    """At most `limit` UTF-8 bytes, cut on a character boundary with an ellipsis."""
    if len(text.encode()) <= limit:
        return text
    out = text.encode()[: limit - 3].decode(errors="ignore")
    return out + "…"


# --------------------------------------------------------------------------------------
# Pacing
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """The pacer's answer: send now (wait 0), or wait; a deferred `leader` will fold the others."""

    wait: float
    leader: bool = False


FOLLOWER_MARGIN = 30.0  # followers come back this long after their leader, which should have folded them


def take_slot(db: Database, member: str, now: datetime, per_minute: int, per_hour: int) -> Slot:
    """Record a send to `member` now if the window allows it; otherwise say how long to wait.

    Of the deliveries deferred in one window, exactly one is the leader (elected in this same locked
    row): it comes back first, gets a slot and folds the rest, which are scheduled later as followers.
    """
    key = f"wecom-pace:{member.lower()}"
    t = now.timestamp()
    for _ in range(5):
        try:
            with db.write() as session:
                row = session.get(KeyValue, key, with_for_update=db.is_postgres)
                state = json.loads(row.value) if row else {}
                stamps = sorted(x for x in state.get("stamps", []) if x > t - 3600)
                leader_until = state.get("leaderUntil")
                minute = [x for x in stamps if x > t - 60]
                wait = 0.0
                if len(minute) >= per_minute:
                    wait = max(0.5, minute[len(minute) - per_minute] + 60 - t)
                elif len(stamps) >= per_hour:
                    wait = max(0.5, stamps[len(stamps) - per_hour] + 3600 - t)
                if wait:
                    if leader_until is None or leader_until < t:
                        slot = Slot(wait, leader=True)
                        leader_until = t + wait + FOLLOWER_MARGIN
                    else:
                        slot = Slot(leader_until - t + FOLLOWER_MARGIN / 2)
                else:
                    slot, leader_until = Slot(0.0), None  # whoever sends now folds everything deferred
                    stamps.append(t)
                value = json.dumps({"stamps": stamps, "leaderUntil": leader_until})
                until = now + timedelta(hours=1, minutes=5)
                if row is None:
                    session.add(KeyValue(key=key, value=value, expires_at=until))
                else:
                    row.value, row.expires_at = value, until
                return slot
        except IntegrityError:
            continue  # two first sends raced to create the row; read theirs
    return Slot(1.0)


@dataclass(frozen=True)
class Folded:
    delivery_id: int
    attempts: int
    kind: str
    title: str
    payload: dict[str, Any]


def claim_deferred(db: Database, job: DeliveryJob, now: datetime, lease_seconds: float) -> list[Folded]:
    """Take over every delivery to this member deferred by pacing, to send them in one digest."""
    marker = f"合并中:{job.delivery_id}:{job.attempts}"
    with db.write() as session:
        ids = list(
            session.scalars(
                select(Delivery.id).where(
                    Delivery.channel == "wecom",
                    Delivery.recipient_id == job.recipient.id,
                    Delivery.status == "failed",
                    Delivery.last_error.like(PACE_DEFERRED + "%"),
                    Delivery.id != job.delivery_id,
                )
            )
        )
        if not ids:
            return []
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), Delivery.status == "failed", Delivery.last_error.like(PACE_DEFERRED + "%"))
            .values(
                status="sending",
                attempts=Delivery.attempts + 1,
                lease_until=now + timedelta(seconds=lease_seconds),
                lease_holder=job.lease_holder,
                last_error=marker,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        rows = session.execute(
            select(Delivery.id, Delivery.attempts, Notification.kind, Notification.title, Notification.payload)
            .join(Notification, Notification.id == Delivery.notification_id)
            .where(Delivery.id.in_(ids), Delivery.status == "sending", Delivery.last_error == marker)
            .order_by(Delivery.notification_id)
        ).all()
        return [Folded(*row) for row in rows]


def settle_folded(db: Database, folded: list[Folded], result: SendResult, now: datetime) -> None:
    """The folded deliveries share the digest's fate: sent, dead, or deferred again (still foldable)."""
    if result.outcome == "sent":
        values: dict[str, Any] = dict(status="sent", sent_at=now, provider_id=result.provider_id, last_error=None)
    elif result.outcome == "permanent":
        values = dict(status="dead", last_error=result.detail)
    else:
        delay = max(result.retry_after or 0, 30.0)
        values = dict(
            status="failed",
            next_attempt_at=now + timedelta(seconds=delay),
            last_error=f"{PACE_DEFERRED}：合并发送失败（{result.detail}）",
        )
    with db.write() as session:
        for f in folded:
            session.execute(
                update(Delivery)
                .where(Delivery.id == f.delivery_id, Delivery.status == "sending", Delivery.attempts == f.attempts)
                .values(lease_until=None, updated_at=now, **values)
                .execution_options(synchronize_session=False)
            )


# --------------------------------------------------------------------------------------
# The channel
# --------------------------------------------------------------------------------------


class WecomChannel:
    name = "wecom"

    def __init__(self, ctx: AppContext, tokens: TokenCache, client: httpx.AsyncClient) -> None:
        s = ctx.settings
        assert s.wecom_agentid is not None
        self.ctx = ctx
        self.tokens = tokens
        self.client = client
        self.agentid = s.wecom_agentid
        self.url = s.wecom_api_base.rstrip("/") + SEND_PATH

    # ---- what the member sees ---------------------------------------------------------

    def link(self, customer_id: Any = None) -> str:
        s = self.ctx.settings
        base = s.public_url.rstrip("/")
        if customer_id in (None, ""):
            return base + s.console_list_path
        return base + s.console_customer_path.replace("{customerId}", str(customer_id))

    def textcard(self, job: DeliveryJob) -> dict[str, str]:
        s, p = self.ctx.settings, job.payload
        when = format_time(p.get("assignTime"), s.tz, job.created_at)
        if job.kind == "customer_assigned":
            phone = one_line(p.get("customerPhone"))
            lines = [
                f"客户：{one_line(p.get('customerName')) or '-'}",
                f"电话：{(mask_phone(phone) if s.wecom_mask_phone else phone) or '-'}",
                f"来源：{one_line(p.get('source')) or '-'}",
                f"分配人：{one_line(p.get('actorName')) or '系统'}",
                f"时间：{when}",
            ]
            url = self.link(p.get("customerId"))
        elif job.kind in ("customers_assigned", "customers_recycled"):
            names = [one_line(c.get("customerName")) for c in p.get("customers") or [] if isinstance(c, dict)]
            lines = [one_line(job.body)] if job.body else []
            if names:
                lines.append("客户：" + "、".join(names[:10]) + (" 等" if len(names) > 10 else ""))
            lines.append(f"时间：{when}")
            url = self.link()
        else:
            lines = [one_line(job.body or job.title), f"时间：{when}"]
            url = self.link(p.get("customerId"))
        return {
            "title": cut_bytes(one_line(job.title) or "新通知", TITLE_BYTES),
            "description": cut_bytes("\n".join(lines), DESCRIPTION_BYTES),
            "url": url,
            "btntxt": "查看",
        }

    def digest_card(self, job: DeliveryJob, folded: list[Folded]) -> dict[str, str]:
        items = [(job.kind, job.title, job.payload)] + [(f.kind, f.title, f.payload) for f in folded]
        if all(kind in ASSIGNED_KINDS for kind, _, _ in items):
            leads = sum(int(p.get("count") or 1) if kind == "customers_assigned" else 1 for kind, _, p in items)
            title = f"您有 {leads} 条新线索"
        else:
            title = f"您有 {len(items)} 条新通知"
        lines = [f"· {one_line(t)}" for _, t, _ in items]
        description = ""
        for i, line in enumerate(lines):
            more = f"\n……等 {len(lines)} 条" if i < len(lines) - 1 else ""
            candidate = (description + "\n" if description else "") + line
            if len((candidate + more).encode()) > DESCRIPTION_BYTES:
                description += f"\n……等 {len(lines)} 条"
                break
            description = candidate
        return {
            "title": cut_bytes(title, TITLE_BYTES),
            "description": cut_bytes(description, DESCRIPTION_BYTES),
            "url": self.link(),
            "btntxt": "查看",
        }

    def message_body(self, job: DeliveryJob, folded: list[Folded] | None = None) -> dict[str, Any]:
        card = self.digest_card(job, folded) if folded else self.textcard(job)
        return {"touser": job.recipient.wecom_userid, "msgtype": "textcard", "agentid": self.agentid, "textcard": card}

    # ---- sending ----------------------------------------------------------------------

    async def send(self, job: DeliveryJob) -> SendResult:
        member = job.recipient.wecom_userid
        if not member:
            return SendResult.skipped("用户未绑定企业微信账号")
        s, db = self.ctx.settings, self.ctx.db
        slot = await to_thread.run_sync(
            take_slot, db, member, self.ctx.clock.now(), s.wecom_per_minute, s.wecom_per_hour
        )
        if slot.wait > 0:
            return SendResult.retry(
                f"{PACE_DEFERRED}：每人每分钟最多 {s.wecom_per_minute} 条，稍后合并发送", retry_after=slot.wait
            )
        folded = await to_thread.run_sync(claim_deferred, db, job, self.ctx.clock.now(), s.delivery_lease_seconds)
        body = self.message_body(job, folded)

        async def post(token: str) -> ApiReply:
            return await call_platform(self.client, "POST", self.url, params={"access_token": token}, body=body)

        try:
            reply = await call_with_token(
                self.tokens, post, lambda: lease_left(job, self.ctx.clock.now()), s.send_timeout + 1
            )
        except TokenUnavailable as exc:
            result = SendResult.permanent(exc.detail) if exc.permanent else SendResult.retry(exc.detail)
        else:
            result = self.classify(reply, member)
        if folded:
            try:
                await to_thread.run_sync(settle_folded, db, folded, result, self.ctx.clock.now())
            except Exception as exc:  # noqa: BLE001
                # WeCom has answered for this delivery; a database blip must not turn that into a re-send
                # of it. The folded ones stay claimed and come back when their lease runs out.
                log.warning("记录合并发送结果失败（投递 %s）：%s", job.delivery_id, type(exc).__name__)
            if result.outcome == "sent":
                result = SendResult.sent(result.provider_id, f"与其他 {len(folded)} 条合并为一条摘要发送")
        return result

    def classify(self, reply: ApiReply, member: str) -> SendResult:
        if reply.data is None:
            return SendResult.retry(f"企业微信{reply.failure}")
        code, msg = reply.errcode, reply.errmsg
        if code == 0:
            invalid = {u.strip().lower() for u in str(reply.data.get("invaliduser") or "").split("|")}
            if member.lower() in invalid:
                return SendResult.permanent(f"企业微信账号无效或不在应用可见范围：{member}（invaliduser）")
            msgid = reply.data.get("msgid")
            return SendResult.sent(provider_id=None if msgid in (None, "") else str(msgid)[:64])
        if code == 81013:
            return SendResult.permanent(f"企业微信账号无效或不在应用可见范围：{member}（81013）")
        if code == 40056:
            return SendResult.permanent("企业微信 agentid 无效（40056），请检查 LEADPUSH_WECOM_AGENTID")
        if code == 60020:
            return SendResult.permanent("服务器 IP 不在企业微信应用的可信 IP 列表中（60020）")
        if code == 301002:
            return SendResult.permanent("access_token 属于其他应用（301002），请检查 LEADPUSH_WECOM_SECRET 与 AGENTID")
        if code in (40008, 40033, 44004, 45002):
            return SendResult.permanent(f"企业微信拒绝消息内容（{code}）：{short_errmsg(msg)}")
        if code == 45009:
            return SendResult.retry("企业微信接口调用频率超限（45009），稍后重试", retry_after=60.0)
        return retry_for("企业微信", code, msg)

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.tokens.store.aclose()
