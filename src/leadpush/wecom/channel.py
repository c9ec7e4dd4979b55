"""The WeCom channel: an app message (textcard) per notification, paced per member, the excess folded.

What the card says is in card.py; how sends to one member are paced and folded, in pacing.py.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from anyio import to_thread

from leadpush.context import AppContext
from leadpush.notify.channels.base import DeliveryJob, SendResult, lease_left
from leadpush.tencent.client import ApiReply, call_platform, call_with_token, issued_token
from leadpush.tencent.errcodes import retry_for, short_errmsg
from leadpush.tencent.tokens import Fetch, TokenCache, TokenUnavailable, shared_token_cache
from leadpush.wecom.card import carried, digest_card, textcard
from leadpush.wecom.pacing import PACE_DEFERRED, Folded, claim_deferred, settle_folded, take_slot

log = logging.getLogger(__name__)

SEND_PATH = "/cgi-bin/message/send"


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

    def message_body(self, job: DeliveryJob, folded: list[Folded] | None = None) -> dict[str, Any]:
        """One textcard: the notice itself, or a digest of it, what it carries and what pacing deferred. It
        says nothing about the try (no attempt number, no send time): sent again after a crash, it is the same
        message, which WeCom's duplicate check then shows only once."""
        s = self.ctx.settings
        notes = carried(job, folded or ())
        card = digest_card(s, job, notes) if notes else textcard(s, job)
        body: dict[str, Any] = {
            "touser": job.recipient.wecom_userid,
            "msgtype": "textcard",
            "agentid": self.agentid,
            "textcard": card,
        }
        if s.wecom_duplicate_check_seconds:
            body["enable_duplicate_check"] = 1
            body["duplicate_check_interval"] = s.wecom_duplicate_check_seconds
        return body

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
        folded_at = self.ctx.clock.now()
        folded = await to_thread.run_sync(claim_deferred, db, job, folded_at, s.delivery_lease_seconds)
        body = self.message_body(job, folded)

        async def post(token: str) -> ApiReply:
            return await call_platform(self.client, "POST", self.url, params={"access_token": token}, body=body)

        try:
            reply = await call_with_token(
                self.tokens, post, lambda: lease_left(job, self.ctx.clock.now()), s.send_timeout + 1
            )
        except TokenUnavailable as exc:
            result = exc.as_result()
        else:
            result = self.classify(reply, member)
        if folded:
            try:
                await to_thread.run_sync(
                    settle_folded, db, folded, result, self.ctx.clock.now(), folded_at, job.lease_holder
                )
            except Exception as exc:  # noqa: BLE001
                # WeCom has answered for this delivery; a database blip must not turn that into a re-send
                # of it. The folded ones stay claimed and come back when their lease runs out.
                log.warning("记录合并发送结果失败（投递 %s）：%s", job.delivery_id, type(exc).__name__)
            if result.outcome == "sent":
                result = SendResult.sent(
                    result.provider_id, f"与其他 {len(folded)} 条合并为一条摘要发送", errcode=result.errcode
                )
        return result

    def classify(self, reply: ApiReply, member: str) -> SendResult:
        if reply.data is None:
            return SendResult.retry(f"企业微信{reply.failure}")
        code, msg = reply.errcode, reply.errmsg
        if code == 0:
            invalid = {u.strip().lower() for u in str(reply.data.get("invaliduser") or "").split("|")}
            if member.lower() in invalid:
                return SendResult.permanent(
                    f"企业微信账号无效或不在应用可见范围：{member}（invaliduser）", errcode=code
                )
            msgid = reply.data.get("msgid")
            return SendResult.sent(provider_id=None if msgid in (None, "") else str(msgid)[:64], errcode=code)
        if code == 81013:
            return SendResult.permanent(f"企业微信账号无效或不在应用可见范围：{member}（81013）", errcode=code)
        if code == 40056:
            return SendResult.permanent("企业微信 agentid 无效（40056），请检查 LEADPUSH_WECOM_AGENTID", errcode=code)
        if code == 60020:
            return SendResult.permanent("服务器 IP 不在企业微信应用的可信 IP 列表中（60020）", errcode=code)
        if code == 301002:
            return SendResult.permanent(
                "access_token 属于其他应用（301002），请检查 LEADPUSH_WECOM_SECRET 与 AGENTID", errcode=code
            )
        if code in (40008, 40033, 44004, 45002):
            return SendResult.permanent(f"企业微信拒绝消息内容（{code}）：{short_errmsg(msg)}", errcode=code)
        if code == 45009:
            return SendResult.retry("企业微信接口调用频率超限（45009），稍后重试", retry_after=60.0, errcode=code)
        return retry_for("企业微信", code, msg)

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.tokens.store.aclose()


def token_fetcher(client: httpx.AsyncClient, base: str, corpid: str, secret: str) -> Fetch:
    """The WeCom app's access token (`gettoken`: no forced refresh, a refused token is simply re-fetched)."""

    async def fetch(_force: bool) -> tuple[str, int]:
        reply = await call_platform(
            client, "GET", f"{base}/cgi-bin/gettoken", params={"corpid": corpid, "corpsecret": secret}
        )
        return issued_token(reply, "企业微信")

    return fetch


def build_channel(ctx: AppContext) -> WecomChannel | None:
    """The WeCom channel when corpid, secret and agentid are configured; None leaves it off."""
    s = ctx.settings
    if not (s.wecom_enabled and s.wecom_corpid and s.wecom_secret):
        return None
    client = httpx.AsyncClient(timeout=s.send_timeout)
    fetch = token_fetcher(client, s.wecom_api_base.rstrip("/"), s.wecom_corpid, s.wecom_secret)
    tokens = shared_token_cache(ctx, f"wecom:{s.wecom_corpid}:{s.wecom_agentid}", fetch, supports_force=False)
    return WecomChannel(ctx, tokens, client)
