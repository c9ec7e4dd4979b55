"""WeCom sign-in (企业微信登录): the link that sends a browser to WeCom, the state that ties the answer to
the browser that asked, and the leadpush user behind the code WeCom sends back.

Inside WeCom's own browser (its user agent says `wxwork`) the OAuth link signs a member in silently; on a
desktop the QR login page asks them to scan and confirm on the phone. Either way WeCom sends the browser
back to our callback with `code` and `state`. The state is random, kept in the `kv` table with where to go
afterwards, and bound to the browser by a short-lived HttpOnly cookie: the callback accepts only a state
that matches its cookie and spends it, so a code planted by someone else (login CSRF) or a replayed
callback gets nowhere. The code is exchanged for the member's userid with the app's access token (the one
the WeCom channel uses, shared through the token store); codes are single-use and live 5 minutes.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from datetime import datetime, timedelta
from urllib.parse import urlencode

import httpx
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.db import Database, rows_changed
from leadpush.errors import ApiError
from leadpush.notify.models import KeyValue
from leadpush.tencent.client import ApiReply, call_platform, call_with_token
from leadpush.tencent.errcodes import BUSY, TOKEN_ERRORS, short_errmsg
from leadpush.tencent.tokens import TokenUnavailable, shared_token_cache
from leadpush.users.models import User
from leadpush.users.sessions import start_session
from leadpush.wecom.channel import token_fetcher

START_PATH = "/console/auth/wecom"
CALLBACK_PATH = "/console/auth/wecom/callback"
STATE_COOKIE = "leadpush_wecom_state"
GETUSERINFO_PATH = "/cgi-bin/auth/getuserinfo"
STATE_KEY = "wecom-login:"  # + sha256 of the state: the kv row holds only where to go afterwards
DEFAULT_NEXT = "/console"
# Where a signed-in person may be sent afterwards: console pages only (no open redirect), not the sign-in
# pages themselves.
CONSOLE_PATH = re.compile(r"^/console(?:[/?]|$)")
MAX_NEXT = 500


def is_wecom_browser(user_agent: str | None) -> bool:
    """WeCom's built-in browser (desktop and phone) names itself `wxwork` in its user agent."""
    return "wxwork" in (user_agent or "").lower()


def safe_next(value: str | None) -> str:
    """`next` when it is a console path on this site, else the console's start page."""
    value = (value or "").strip()
    if (
        not value
        or len(value) > MAX_NEXT
        or not CONSOLE_PATH.match(value)
        or "\\" in value
        or any(ord(c) < 0x20 for c in value)
        or value.startswith(("/console/login", "/console/auth/"))
    ):
        return DEFAULT_NEXT
    return value


def redirect_uri(settings: Settings, request_base: str) -> str:
    """Our callback as WeCom must send the browser to it (its host must be a trusted domain of the app)."""
    base = settings.wecom_redirect_base or request_base.rstrip("/")
    return base + CALLBACK_PATH


def sign_in_link(settings: Settings, *, uri: str, state: str, in_wecom: bool) -> str:
    """The OAuth link inside WeCom's browser, else the QR login page."""
    if in_wecom:
        query = urlencode(
            {
                "appid": settings.wecom_corpid,
                "redirect_uri": uri,
                "response_type": "code",
                "scope": "snsapi_base",
                "state": state,
                "agentid": settings.wecom_agentid,
            }
        )
        return f"{settings.wecom_oauth_base}/connect/oauth2/authorize?{query}#wechat_redirect"
    query = urlencode(
        {
            "login_type": "CorpApp",
            "appid": settings.wecom_corpid,
            "agentid": settings.wecom_agentid,
            "redirect_uri": uri,
            "state": state,
        }
    )
    return f"{settings.wecom_login_base}/wwlogin/sso/login?{query}"


# --- the state -------------------------------------------------------------------------------------


def _state_key(state: str) -> str:
    return STATE_KEY + hashlib.sha256(state.encode()).hexdigest()


def begin(db: Database, now: datetime, ttl_seconds: int, next_path: str) -> str:
    """A new random state, remembered with where to go afterwards until it is spent or expires."""
    state = secrets.token_urlsafe(32)
    with db.write() as session:
        # Sign-ins that were started and never finished: their rows go as new ones come.
        session.execute(
            delete(KeyValue)
            .where(KeyValue.key.startswith(STATE_KEY), KeyValue.expires_at <= now)
            .execution_options(synchronize_session=False)
        )
        session.add(
            KeyValue(
                key=_state_key(state),
                value=json.dumps({"next": next_path}),
                expires_at=now + timedelta(seconds=ttl_seconds),
            )
        )
    return state


def spend_state(db: Database, state: str, now: datetime) -> str:
    """Spend a state (once only): where to go afterwards; 400 `state_expired` when unknown or expired."""
    key = _state_key(state)
    with db.write() as session:
        raw = session.scalar(select(KeyValue.value).where(KeyValue.key == key, KeyValue.expires_at > now))
        spent = session.execute(
            delete(KeyValue)
            .where(KeyValue.key == key, KeyValue.expires_at > now)
            .execution_options(synchronize_session=False)
        )
        if raw is None or rows_changed(spent) != 1:
            raise ApiError(400, "state_expired", "这次企业微信登录已过期或已完成，请重新点击“企业微信登录”")
    try:
        return safe_next(json.loads(raw).get("next"))
    except (ValueError, AttributeError):
        return DEFAULT_NEXT


def check_state(query_state: str | None, cookie_state: str | None) -> str:
    """The state when the callback's matches the one this browser was given; else 400 and why not."""
    if not query_state or not cookie_state:
        raise ApiError(
            400,
            "state_missing",
            "找不到这次企业微信登录的校验信息（登录超过 10 分钟，或浏览器未保存 Cookie），请重新点击“企业微信登录”",
        )
    if len(query_state) > 200 or not secrets.compare_digest(query_state.encode(), cookie_state.encode()):
        raise ApiError(
            400, "state_mismatch", "登录校验失败：这次登录不是从本浏览器发起的，请在本页重新点击“企业微信登录”"
        )
    return query_state


# --- code -> member -> user --------------------------------------------------------------------------


def _member(reply: ApiReply) -> str:
    """The userid in getuserinfo's answer, or the error to show."""
    if reply.data is None:
        raise ApiError(502, "wecom_unavailable", f"暂时无法连接企业微信（{reply.failure}），请稍后重试")
    code = reply.errcode
    if code == 0:
        userid = reply.data.get("userid") or reply.data.get("UserId")
        if isinstance(userid, str) and userid:
            return userid
        raise ApiError(403, "not_wecom_member", "您不是本企业的企业微信成员，无法登录 leadpush")
    if code in (40029, 40163, 41008):
        raise ApiError(400, "invalid_code", "企业微信登录凭证无效、已使用或已过期，请重新点击“企业微信登录”")
    if code == 50001:
        raise ApiError(
            502,
            "redirect_not_trusted",
            "leadpush 的回调地址不在企业微信应用的可信域名中（50001），请管理员在企业微信管理后台配置可信域名",
        )
    if code == BUSY or code in TOKEN_ERRORS:
        raise ApiError(502, "wecom_unavailable", "企业微信暂时繁忙，请稍后重试")
    if code in (45009, 45011):
        raise ApiError(502, "wecom_unavailable", "企业微信接口调用过于频繁，请稍后重试")
    raise ApiError(502, "wecom_error", f"企业微信登录失败：errcode {code} {short_errmsg(reply.errmsg)}")


async def member_from_code(ctx: AppContext, code: str) -> str:
    """getuserinfo: the member's userid behind a sign-in code. A token WeCom calls expired (42001) or
    invalid is fetched afresh and the call made once more; the code is not spent by a refused token."""
    s = ctx.settings
    if not (s.wecom_enabled and s.wecom_corpid and s.wecom_secret):
        raise ApiError(404, "wecom_not_configured", "未启用企业微信登录")
    base = s.wecom_api_base.rstrip("/")
    async with httpx.AsyncClient(timeout=s.send_timeout) as client:
        fetch = token_fetcher(client, base, s.wecom_corpid, s.wecom_secret)
        # The same cache key as the WeCom channel: one token for the app, whoever fetched it.
        tokens = shared_token_cache(ctx, f"wecom:{s.wecom_corpid}:{s.wecom_agentid}", fetch, supports_force=False)

        async def ask(token: str) -> ApiReply:
            return await call_platform(
                client, "GET", base + GETUSERINFO_PATH, params={"access_token": token, "code": code}
            )

        try:
            reply = await call_with_token(tokens, ask)
        except TokenUnavailable as exc:
            if exc.permanent:
                raise ApiError(
                    502,
                    "wecom_misconfigured",
                    "企业微信应用配置有误（无法获取 access_token），请管理员检查 LEADPUSH_WECOM_CORPID / SECRET",
                ) from None
            raise ApiError(502, "wecom_unavailable", "暂时无法连接企业微信，请稍后重试") from None
        finally:
            await tokens.store.aclose()
    return _member(reply)


def user_for_member(session: Session, userid: str) -> User:
    """The active leadpush user bound to this WeCom member (userids are case-insensitive at WeCom)."""
    user = session.scalar(select(User).where(User.wecom_userid == userid))
    if user is None:
        found = session.scalars(select(User).where(func.lower(User.wecom_userid) == userid.lower())).all()
        user = found[0] if len(found) == 1 else None
    if user is None:
        raise ApiError(
            403,
            "wecom_not_bound",
            f"企业微信账号 {userid} 尚未绑定 leadpush 用户，请管理员在用户管理中绑定企业微信账号",
        )
    if not user.active:
        raise ApiError(403, "user_inactive", "该账号已停用，请联系管理员")
    return user


def open_session(ctx: AppContext, userid: str, client: str | None) -> str:
    """A console session (the same kind password sign-in gives) for the user bound to this member."""
    with ctx.db.write() as session:
        user = user_for_member(session, userid)
        return start_session(session, user, via="wecom", now=ctx.clock.now(), settings=ctx.settings, client=client)
