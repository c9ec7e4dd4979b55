"""The WeChat channel: mini-program subscribe messages, paid for with the user's one-time credits.

Each send reserves a credit before calling WeChat and settles it by the answer (see credits.py); a
delivery with no credit is skipped without calling WeChat.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime, timedelta
from typing import Any

import httpx
from anyio import to_thread

from leadpush.context import AppContext
from leadpush.notify.channels.base import DeliveryJob, SendResult, lease_left
from leadpush.tencent.client import ApiReply, call_platform, call_with_token, issued_token
from leadpush.tencent.errcodes import retry_for, short_errmsg
from leadpush.tencent.tokens import Fetch, TokenCache, TokenUnavailable, shared_token_cache
from leadpush.wechat.credits import Settlement, reserve_credit, settle_credit
from leadpush.wechat.format import ValueRefused, subscribe_page, template_data, template_fields

SEND_PATH = "/cgi-bin/message/subscribe/send"
NO_CREDIT = "无订阅次数（no credit）：用户未在小程序中允许接收，或次数已用完"

log = logging.getLogger(__name__)


def seconds_until_quota_resets(now: datetime, tz: Any, cap: float) -> float:
    """WeChat's daily quota resets at midnight (Beijing time); try then, or after `cap` if sooner."""
    local = now.astimezone(tz)
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=5, microsecond=0)
    return max(1.0, min(cap, (midnight - local).total_seconds()))


def _bad_field(errmsg: str) -> str:
    m = re.search(r"data\.[A-Za-z_]+[0-9]*\.value", errmsg)
    if m:
        return m.group(0)
    m = re.search(r"\b([a-z_]+) invalid", errmsg)
    return m.group(1) if m else short_errmsg(errmsg)


class WechatChannel:
    name = "wechat"

    def __init__(self, ctx: AppContext, tokens: TokenCache, client: httpx.AsyncClient) -> None:
        s = ctx.settings
        assert s.wechat_template_id
        self.ctx = ctx
        self.tokens = tokens
        self.client = client
        self.template_id = s.wechat_template_id
        self.field_map = s.wechat_field_map
        self.url = s.wechat_api_base.rstrip("/") + SEND_PATH
        self._settling: set[asyncio.Future[None]] = set()

    def message_body(self, job: DeliveryJob) -> dict[str, Any]:
        """The subscribe/send body for this delivery (exactly what WeChat receives)."""
        s = self.ctx.settings
        fields = template_fields(job.kind, job.payload, job.title, job.body)
        page = subscribe_page(job.kind, fields, s.wechat_page, s.wechat_digest_page)
        body: dict[str, Any] = {"touser": job.recipient.wechat_openid, "template_id": self.template_id}
        if page:
            body["page"] = page
        body["miniprogram_state"] = s.wechat_miniprogram_state
        body["lang"] = "zh_CN"
        body["data"] = template_data(fields, self.field_map, s.tz, s.wechat_mask_phone, job.created_at)
        return body

    async def send(self, job: DeliveryJob) -> SendResult:
        if not job.recipient.wechat_openid:
            return SendResult.skipped("用户未绑定小程序 openid")
        try:
            body = self.message_body(job)  # before the credit: a message that cannot be sent costs none
        except ValueRefused as exc:
            return SendResult.permanent(str(exc))
        db, user_id, now = self.ctx.db, job.recipient.id, self.ctx.clock.now()
        if not await to_thread.run_sync(reserve_credit, db, user_id, self.template_id, job.delivery_id, now):
            return SendResult.skipped(NO_CREDIT)

        async def post(token: str) -> ApiReply:
            return await call_platform(self.client, "POST", self.url, params={"access_token": token}, body=body)

        none_left = False
        s = self.ctx.settings
        try:
            reply = await call_with_token(
                self.tokens, post, lambda: lease_left(job, self.ctx.clock.now()), s.send_timeout + 1
            )
        except TokenUnavailable as exc:
            result = exc.as_result()
        else:
            result = self.classify(reply)
            none_left = reply.errcode == 43101
        outcome: Settlement = "spent" if result.outcome == "sent" else "none_left" if none_left else "refund"
        await self._settle(job, outcome)
        return result

    async def _settle(self, job: DeliveryJob, outcome: Settlement) -> None:
        """Settle the credit without letting a slow or failing database hold back WeChat's answer.

        The answer must reach the ledger while this worker still holds the lease, or the delivery would
        be sent again. A settlement still running after the wait finishes on its own; one that failed
        leaves the credit reserved for this delivery, which its retry (if any) reuses: never spent twice.
        """
        s, now = self.ctx.settings, self.ctx.clock.now()
        settle = asyncio.ensure_future(
            to_thread.run_sync(
                settle_credit, self.ctx.db, job.recipient.id, self.template_id, job.delivery_id, outcome, now
            )
        )
        self._settling.add(settle)
        settle.add_done_callback(self._settled)
        await asyncio.wait({settle}, timeout=max(0.5, min(s.send_timeout, lease_left(job, now) - 2.0)))
        if not settle.done():
            log.warning("结算订阅次数较慢，先记录发送结果（投递 %s）", job.delivery_id)

    def _settled(self, task: asyncio.Future[None]) -> None:
        self._settling.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("结算订阅次数失败：%s", type(task.exception()).__name__)

    def classify(self, reply: ApiReply) -> SendResult:
        if reply.data is None:
            return SendResult.retry(f"微信{reply.failure}")
        code, msg = reply.errcode, reply.errmsg
        if code == 0:
            msgid = reply.data.get("msgid")
            return SendResult.sent(provider_id=None if msgid is None else str(msgid), errcode=code)
        s = self.ctx.settings
        if code == 43101:
            return SendResult.permanent("用户没有可用的订阅次数（43101），已将次数清零", errcode=code)
        if code == 40003:
            return SendResult.permanent(
                f"openid 无效（40003，可能不是本小程序的 openid）：{short_errmsg(msg)}", errcode=code
            )
        if code == 40037:
            return SendResult.permanent(
                f"模板 ID 无效（40037），请检查 LEADPUSH_WECHAT_TEMPLATE_ID：{short_errmsg(msg)}", errcode=code
            )
        if code == 41030:
            return SendResult.permanent(
                f"跳转页面不存在于已发布的小程序（41030），请检查 LEADPUSH_WECHAT_PAGE：{short_errmsg(msg)}",
                errcode=code,
            )
        if code == 47003:
            return SendResult.permanent(f"模板数据不符合格式要求（47003）：{_bad_field(msg)}", errcode=code)
        if code == 45009:
            wait = seconds_until_quota_resets(self.ctx.clock.now(), s.tz, s.wechat_quota_retry_seconds)
            return SendResult.retry("已达微信接口每日调用上限（45009），稍后重试", retry_after=wait, errcode=code)
        return retry_for("微信", code, msg)

    async def aclose(self) -> None:
        if self._settling:
            await asyncio.wait(self._settling, timeout=10)
        await self.client.aclose()
        await self.tokens.store.aclose()


def token_fetcher(client: httpx.AsyncClient, base: str, appid: str, secret: str, mode: str = "stable") -> Fetch:
    """The mini program's access token: `stable_token` (safe for many servers) or the legacy endpoint."""

    async def fetch(force: bool) -> tuple[str, int]:
        if mode == "legacy":
            reply = await call_platform(
                client,
                "GET",
                f"{base}/cgi-bin/token",
                params={"grant_type": "client_credential", "appid": appid, "secret": secret},
            )
        else:
            reply = await call_platform(
                client,
                "POST",
                f"{base}/cgi-bin/stable_token",
                body={"grant_type": "client_credential", "appid": appid, "secret": secret, "force_refresh": force},
            )
        return issued_token(reply, "微信")

    return fetch


def build_channel(ctx: AppContext) -> WechatChannel | None:
    """The WeChat channel when appid, secret and template are configured; None leaves it off."""
    s = ctx.settings
    if not (s.wechat_enabled and s.wechat_appid and s.wechat_secret):
        return None
    client = httpx.AsyncClient(timeout=s.send_timeout)
    fetch = token_fetcher(client, s.wechat_api_base.rstrip("/"), s.wechat_appid, s.wechat_secret, s.wechat_token_mode)
    tokens = shared_token_cache(ctx, f"wechat:{s.wechat_appid}", fetch, supports_force=s.wechat_token_mode == "stable")
    return WechatChannel(ctx, tokens, client)
