"""Credits from wx.requestSubscribeMessage, and binding an openid from a mini-program login code."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from leadpush.config import Settings
from leadpush.errors import ApiError
from leadpush.notify.models import WechatSubscription
from leadpush.notify.tokens import call_platform, short_errmsg
from leadpush.users.models import User

MAX_TEMPLATES = 20  # wx.requestSubscribeMessage asks for at most 3 at once; anything bigger is not its result


def accepted_templates(result: dict[str, Any]) -> list[str]:
    """The template ids the user tapped "allow" for; reject / ban / filter earn nothing.

    A failed call (errMsg not ending in ":ok") earns nothing either.
    """
    if len(result) > MAX_TEMPLATES + 1:
        raise ApiError(422, "validation_error", f"订阅结果最多包含 {MAX_TEMPLATES} 个模板")
    err = result.get("errMsg")
    if err is not None and not str(err).endswith(":ok"):
        return []
    out = []
    for key, value in result.items():
        if key == "errMsg":
            continue
        if not key or len(key) > 128:
            raise ApiError(422, "validation_error", "模板 ID 格式不正确")
        if value == "accept":
            out.append(key)
    return out


def add_credits(session: Session, user_id: int, template_ids: list[str], now: datetime) -> None:
    """+1 credit per accepted template, atomically (concurrent reports each count)."""
    for tid in template_ids:
        bumped = session.execute(
            update(WechatSubscription)
            .where(WechatSubscription.user_id == user_id, WechatSubscription.template_id == tid)
            .values(credits=WechatSubscription.credits + 1, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if bumped.rowcount == 1:
            continue
        try:
            with session.begin_nested():
                session.add(WechatSubscription(user_id=user_id, template_id=tid, credits=1, updated_at=now))
        except IntegrityError:  # created concurrently: add to theirs
            session.execute(
                update(WechatSubscription)
                .where(WechatSubscription.user_id == user_id, WechatSubscription.template_id == tid)
                .values(credits=WechatSubscription.credits + 1, updated_at=now)
                .execution_options(synchronize_session=False)
            )


def credits_of(session: Session, user_id: int) -> dict[str, int]:
    rows = session.execute(
        select(WechatSubscription.template_id, WechatSubscription.credits).where(WechatSubscription.user_id == user_id)
    )
    return {tid: credits for tid, credits in rows}


async def openid_from_code(settings: Settings, code: str) -> str:
    """jscode2session: the mini-program openid behind a wx.login code."""
    if not (settings.wechat_appid and settings.wechat_secret):
        raise ApiError(503, "wechat_not_configured", "未配置微信小程序（LEADPUSH_WECHAT_APPID / SECRET）")
    async with httpx.AsyncClient(timeout=settings.send_timeout) as client:
        reply = await call_platform(
            client,
            "GET",
            settings.wechat_api_base.rstrip("/") + "/sns/jscode2session",
            params={
                "appid": settings.wechat_appid,
                "secret": settings.wechat_secret,
                "js_code": code,
                "grant_type": "authorization_code",
            },
        )
    if reply.data is None:
        raise ApiError(502, "wechat_unavailable", f"微信登录接口暂不可用：{reply.failure}")
    errcode = reply.errcode
    if errcode in (40029, 40163):
        raise ApiError(400, "invalid_code", "登录 code 无效或已使用，请重新调用 wx.login")
    if errcode == 45011:
        raise ApiError(429, "too_many_requests", "微信登录过于频繁，请稍后再试")
    if errcode == -1:
        raise ApiError(502, "wechat_unavailable", "微信系统繁忙，请稍后再试")
    openid = reply.data.get("openid")
    if errcode or not isinstance(openid, str) or not openid:
        raise ApiError(502, "wechat_error", f"微信登录失败：errcode {errcode} {short_errmsg(reply.errmsg)}")
    return openid


def bind_openid(session: Session, user_id: int, openid: str, now: datetime) -> bool:
    """Bind `openid` to the user (one user per openid). Returns True when it changed.

    Credits belong to an openid at WeChat, so a user who switches to a new openid starts from zero.
    """
    owner = session.scalar(select(User.id).where(User.wechat_openid == openid))
    if owner is not None and owner != user_id:
        raise ApiError(409, "openid_taken", "该微信已绑定其他账号")
    user = session.get(User, user_id, with_for_update=session.get_bind().dialect.name == "postgresql")
    if user is None:
        raise ApiError(401, "invalid_token", "登录凭证无效或已失效")
    if user.wechat_openid == openid:
        return False
    had_other = user.wechat_openid is not None
    user.wechat_openid = openid
    if had_other:
        session.execute(
            update(WechatSubscription)
            .where(WechatSubscription.user_id == user_id)
            .values(credits=0, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    try:
        session.flush()
    except IntegrityError as exc:
        raise ApiError(409, "openid_taken", "该微信已绑定其他账号") from exc
    return True
