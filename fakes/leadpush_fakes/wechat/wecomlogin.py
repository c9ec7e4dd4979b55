"""WeCom sign-in: OAuth inside WeCom's browser, the desktop QR login page, and code → userid.

The two browser-facing hosts of the real platform are served here too, so a test's browser can walk
the whole flow: ``/connect/oauth2/authorize`` (open.weixin.qq.com) redirects at once, as WeCom's own
browser does for a member; ``/wwlogin/sso/login`` (login.work.weixin.qq.com) shows a page whose
"确认登录" link stands for scanning the QR code and confirming on the phone. Both send the browser to
``redirect_uri?code=…&state=…`` with a fresh code for the identity set by ``/_fake/wecom/login``.
``/cgi-bin/auth/getuserinfo`` checks the access token, then spends the code (single use, 5 minutes).
"""

from __future__ import annotations

import html
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from leadpush_fakes.wechat.replies import reject, state_of
from leadpush_fakes.wechat.state import FakeWeChatState

router = APIRouter()

OAUTH_PATH = "/connect/oauth2/authorize"
SSO_LOGIN_PATH = "/wwlogin/sso/login"
SSO_CONFIRM_PATH = "/wwlogin/sso/confirm"
GETUSERINFO_PATH = "/cgi-bin/auth/getuserinfo"


def _error_page(message: str, status: int = 400) -> HTMLResponse:
    body = f"<!doctype html><meta charset=utf-8><title>企业微信</title><p id=error>{html.escape(message)}</p>"
    return HTMLResponse(body, status_code=status)


def _check_link(st: FakeWeChatState, request: Request, *, oauth: bool) -> str | None:
    """Why the platform would refuse this sign-in link, or None (the checks WeCom makes before a code)."""
    q = request.query_params
    with st.lock:
        corpid, agentid = st.corpid, st.agentid
    if not q.get("appid") or (corpid is not None and q.get("appid") != corpid):
        return "参数错误：appid 无效"
    if oauth:
        if q.get("response_type") != "code":
            return "参数错误：response_type 必须是 code"
        if q.get("scope") not in ("snsapi_base", "snsapi_privateinfo"):
            return "参数错误：scope 无效"
    else:
        if q.get("login_type") != "CorpApp":
            return "参数错误：login_type 必须是 CorpApp"
        if not q.get("agentid"):
            return "参数错误：缺少 agentid"
    if q.get("agentid") and agentid is not None and q.get("agentid") != str(agentid):
        return "参数错误：agentid 无效"
    target = urlsplit(q.get("redirect_uri") or "")
    if target.scheme not in ("http", "https") or not target.netloc:
        return "参数错误：redirect_uri 无效"
    return None


def _back_to_site(st: FakeWeChatState, request: Request) -> Response:
    """Issue a code for the current identity and send the browser back to redirect_uri with it."""
    q = request.query_params
    redirect_uri = q["redirect_uri"]
    code = st.issue_wecom_code(urlsplit(redirect_uri).netloc)
    if code is None:
        return _error_page("fake wecom：尚未设置登录身份（POST /_fake/wecom/login {userid}）", status=409)
    params = {"code": code}
    if q.get("state") is not None:
        params["state"] = q["state"]
    base = redirect_uri.split("#", 1)[0]
    return RedirectResponse(base + ("&" if "?" in base else "?") + urlencode(params), status_code=302)


@router.get(OAUTH_PATH)
async def oauth_authorize(request: Request) -> Response:
    """Inside WeCom's browser a member is already known: straight back to the site with a code."""
    st = state_of(request)
    problem = _check_link(st, request, oauth=True)
    if problem:
        return _error_page(problem)
    return _back_to_site(st, request)


@router.get(SSO_LOGIN_PATH)
async def sso_login(request: Request) -> Response:
    """The desktop login page: a QR code to scan; here, a link that stands for the phone's confirmation."""
    st = state_of(request)
    problem = _check_link(st, request, oauth=False)
    if problem:
        return _error_page(problem)
    confirm = SSO_CONFIRM_PATH + "?" + urlencode(list(request.query_params.multi_items()))
    with st.lock:
        identity = st.wecom_login_identity
    who = f"{identity[0]} {identity[1]}" if identity else "（未设置）"
    body = (
        "<!doctype html><html lang=zh-CN><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        "<title>企业微信登录</title></head><body>"
        "<h1>企业微信扫码登录（模拟）</h1>"
        "<p>请使用企业微信扫描二维码，并在手机上确认登录。</p>"
        f'<p>模拟的扫码身份：<span id="identity">{html.escape(who)}</span></p>'
        f'<p><a id="confirm" href="{html.escape(confirm)}">确认登录</a></p>'
        "</body></html>"
    )
    return HTMLResponse(body)


@router.get(SSO_CONFIRM_PATH)
async def sso_confirm(request: Request) -> Response:
    """The phone confirmed: back to the site with a fresh code."""
    st = state_of(request)
    problem = _check_link(st, request, oauth=False)
    if problem:
        return _error_page(problem)
    return _back_to_site(st, request)


@router.get(GETUSERINFO_PATH)
async def getuserinfo(request: Request) -> JSONResponse:
    st = state_of(request)
    q = request.query_params
    errcode = st.check_token(q.get("access_token"), "wecom")
    if errcode:
        return reject(st, "getuserinfo", errcode)
    code = q.get("code")
    if not code:
        return reject(st, "getuserinfo", 41008)
    errcode, identity = st.redeem_wecom_code(code)
    if errcode or identity is None:
        return reject(st, "getuserinfo", errcode or 40029)
    kind, value = identity
    return JSONResponse({"errcode": 0, "errmsg": "ok", kind: value})
