"""The WeChat channel: mini-program subscribe messages, paid for with the user's one-time credits.

Each send reserves a credit before calling WeChat and settles it by the answer (see credits.py); a
delivery with no credit is skipped without calling WeChat. The last LEADPUSH_WECHAT_CREDIT_RESERVE credits
are for new leads: any other kind finding no more than that is skipped too, so its chain's next channel
(WeCom) takes over.

45009 (the daily quota) is remembered until the local midnight by every worker (quota.py): until then no
send calls WeChat. Such a delivery asks to give way (`SendResult.give_way`): with a usable next channel in
its chain, `notify.fallback` hands over at once; without one, it waits for the quota to reset.
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
from leadpush.notify.policy import CATEGORIES
from leadpush.tencent.client import ApiReply, call_platform, call_with_token, issued_token
from leadpush.tencent.errcodes import retry_for, short_errmsg
from leadpush.tencent.tokens import Fetch, TokenCache, TokenUnavailable, shared_token_cache
from leadpush.wechat.credits import Reservation, Settlement, reserve_for_send, settle_credit
from leadpush.wechat.format import ValueRefused, subscribe_page, template_data, template_fields
from leadpush.wechat.quota import mark_exhausted, marker_key

SEND_PATH = "/cgi-bin/message/subscribe/send"
NO_CREDIT = "无订阅次数（no credit）：用户未在小程序中允许接收，或次数已用完"
QUOTA_GIVE_WAY = "微信今日调用已达上限（45009）"
RESET_MARGIN = 5.0  # seconds after the local midnight before WeChat is tried again
QUOTA_WAIT = "已达微信接口每日调用上限（45009），稍后重试"
QUOTA_MARKED = "微信今日调用已达上限（45009），今日不再调用，零点后重试"
NEW_LEAD_KINDS = frozenset(CATEGORIES["new_leads"])

log = logging.getLogger(__name__)


def kept_for_new_leads(left: int) -> str:
    return f"订阅次数仅剩 {left} 次，留给新线索"


def carries_new_lead(job: DeliveryJob) -> bool:
    """A new-lead notice, or a digest carrying one: these may spend the last credits."""
    return job.kind in NEW_LEAD_KINDS or any(note.kind in NEW_LEAD_KINDS for note in job.folded)


def seconds_until_quota_resets(now: datetime, tz: Any, cap: float) -> float:
    """WeChat's daily quota resets at midnight (Beijing time); try then, or after `cap` if sooner."""
    local = now.astimezone(tz)
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1.0, min(cap, (midnight - local).total_seconds() + RESET_MARGIN))


def _bad_field(errmsg: str) -> str:
    m = re.search(r"data\.[A-Za-z_]+[0-9]*\.value", errmsg)
    if m:
        return m.group(0)
    m = re.search(r"\b([a-z_]+) invalid", errmsg)
    return m.group(1) if m else short_errmsg(errmsg)


def _not_reserved(found: Reservation) -> str:
    return NO_CREDIT if found.left <= 0 else kept_for_new_leads(found.left)


class WechatChannel:
    name = "wechat"

    def __init__(self, ctx: AppContext, tokens: TokenCache, client: httpx.AsyncClient) -> None:
        s = ctx.settings
        assert s.wechat_template_id
        self.ctx = ctx
        self.tokens = tokens
        self.client = client
        self.template_id = s.wechat_template_id
        self.appid = s.wechat_appid or ""
        self.quota_key = marker_key(self.appid)
        self.field_map = s.wechat_field_map
        self.url = s.wechat_api_base.rstrip("/") + SEND_PATH
        self._settling: set[asyncio.Future[None]] = set()

    def message_body(self, job: DeliveryJob) -> dict[str, Any]:
        """The subscribe/send body for this delivery (exactly what WeChat receives)."""
        s = self.ctx.settings
        fields = template_fields(job.kind, job.payload, job.title, job.body, job.folded)
        page = subscribe_page(job.kind, fields, s.wechat_page, s.wechat_digest_page, bool(job.folded))
        body: dict[str, Any] = {"touser": job.recipient.wechat_openid, "template_id": self.template_id}
        if page:
            body["page"] = page
        body["miniprogram_state"] = s.wechat_miniprogram_state
        body["lang"] = "zh_CN"
        body["data"] = template_data(fields, self.field_map, s.tz, s.wechat_mask_phone, job.created_at)
        return body

    def keep_for(self, job: DeliveryJob) -> int:
        """Credits this delivery must leave untouched: none for a new lead, else the reserve."""
        return 0 if carries_new_lead(job) else self.ctx.settings.wechat_credit_reserve

    def quota_wait(self, now: datetime) -> float:
        s = self.ctx.settings
        return seconds_until_quota_resets(now, s.tz, s.wechat_quota_retry_seconds)

    async def send(self, job: DeliveryJob) -> SendResult:
        if not job.recipient.wechat_openid:
            return SendResult.skipped("用户未绑定小程序 openid")
        try:
            body = self.message_body(job)  # before the credit: a message that cannot be sent costs none
        except ValueRefused as exc:
            return SendResult.permanent(str(exc))
        db, user_id, now = self.ctx.db, job.recipient.id, self.ctx.clock.now()
        keep = self.keep_for(job)
        # The quota marker and the credit in one transaction (credits.reserve_for_send).
        reserved = await to_thread.run_sync(
            reserve_for_send, db, user_id, self.template_id, job.delivery_id, now, keep, self.quota_key
        )
        if reserved.quota_resets is not None:
            # Today's quota is used up: no call (nothing was reserved; a credit an earlier, crashed attempt
            # reserved went back). Say "no credit" rather than wait, if that is the truth; else give way, or
            # wait until the quota resets (known now: no point in trying before).
            if not reserved:
                return SendResult.skipped(_not_reserved(reserved))
            wait = max(1.0, (reserved.quota_resets - now).total_seconds() + RESET_MARGIN)
            return SendResult("retry", QUOTA_MARKED, retry_after=wait, give_way=QUOTA_GIVE_WAY)
        if not reserved:
            return SendResult.skipped(_not_reserved(reserved))

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
            if reply.errcode == 45009:
                await self._mark_quota_exhausted()
        outcome: Settlement = "spent" if result.outcome == "sent" else "none_left" if none_left else "refund"
        await self._settle(job, outcome)
        return result

    async def _mark_quota_exhausted(self) -> None:
        """Tell every worker not to call WeChat again before the local midnight (best effort)."""
        try:
            until = await to_thread.run_sync(
                mark_exhausted, self.ctx.db, self.appid, self.ctx.clock.now(), self.ctx.settings.tz
            )
        except Exception as exc:  # noqa: BLE001 - the send's own answer matters more than the marker
            log.warning("记录微信今日调用已达上限失败：%s", type(exc).__name__)
        else:
            log.warning("微信今日调用已达上限（45009），%s 前不再调用微信", until.isoformat(timespec="minutes"))

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
        if code == 45009:  # give way to the chain's next channel now, else wait for the quota to reset
            wait = self.quota_wait(self.ctx.clock.now())
            return SendResult("retry", QUOTA_WAIT, retry_after=wait, errcode=code, give_way=QUOTA_GIVE_WAY)
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
    legacy = s.wechat_token_mode == "legacy"
    tokens = shared_token_cache(ctx, f"wechat:{s.wechat_appid}", fetch, supports_force=not legacy, issues_new=legacy)
    return WechatChannel(ctx, tokens, client)
