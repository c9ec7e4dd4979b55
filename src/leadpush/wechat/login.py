"""Mini-program login: the openid behind a wx.login code, bound to the signed-in user."""

from __future__ import annotations

from datetime import datetime

import httpx
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from leadpush.config import Settings
from leadpush.errors import ApiError
from leadpush.tencent.client import call_platform
from leadpush.tencent.errcodes import short_errmsg
from leadpush.users.models import User
from leadpush.wechat.credits import zero_credits


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
        zero_credits(session, user_id, now)
    try:
        session.flush()
    except IntegrityError as exc:
        raise ApiError(409, "openid_taken", "该微信已绑定其他账号") from exc
    return True
