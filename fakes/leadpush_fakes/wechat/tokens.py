"""Access tokens: WeChat's stable and legacy tokens, WeCom's gettoken."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from leadpush_fakes.wechat.replies import json_body, reject, state_of
from leadpush_fakes.wechat.state import FakeWeChatState, PlatformRefusal

router = APIRouter()


def check_app_credentials(st: FakeWeChatState, kind: str, appid: Any, secret: Any) -> JSONResponse | None:
    """The rejection for a missing or wrong mini program appid / secret, or None when they pass."""
    if not appid or not isinstance(appid, str):
        return reject(st, kind, 41002)
    if not secret or not isinstance(secret, str):
        return reject(st, kind, 41004)
    if st.appid is not None and appid != st.appid:
        return reject(st, kind, 40013)
    if st.secret is not None and secret != st.secret:
        return reject(st, kind, 40125)
    return None


@router.post("/cgi-bin/stable_token")
async def stable_token(request: Request) -> JSONResponse:
    st = state_of(request)
    st.count_token_request("stable_token")
    body = await json_body(request)
    if not isinstance(body, dict):
        return reject(st, "token", 47001)
    if body.get("grant_type") != "client_credential":
        return reject(st, "token", 40002)
    bad = check_app_credentials(st, "token", body.get("appid"), body.get("secret"))
    if bad is not None:
        return bad
    try:
        token, expires_in = st.issue_stable_token(body["appid"], bool(body.get("force_refresh", False)))
    except PlatformRefusal as refusal:
        return reject(st, "token", refusal.errcode, refusal.detail)
    return JSONResponse({"access_token": token, "expires_in": expires_in})


@router.get("/cgi-bin/token")
async def legacy_token(request: Request) -> JSONResponse:
    st = state_of(request)
    st.count_token_request("token")
    q = request.query_params
    if q.get("grant_type") != "client_credential":
        return reject(st, "token", 40002)
    bad = check_app_credentials(st, "token", q.get("appid"), q.get("secret"))
    if bad is not None:
        return bad
    try:
        token, expires_in = st.issue_legacy_token(q["appid"])
    except PlatformRefusal as refusal:
        return reject(st, "token", refusal.errcode, refusal.detail)
    return JSONResponse({"access_token": token, "expires_in": expires_in})


@router.get("/cgi-bin/gettoken")
async def wecom_token(request: Request) -> JSONResponse:
    st = state_of(request)
    st.count_token_request("gettoken")
    q = request.query_params
    corpid, corpsecret = q.get("corpid"), q.get("corpsecret")
    if not corpid:
        return reject(st, "token", 41002, "corpid missing")
    if not corpsecret:
        return reject(st, "token", 41004, "corpsecret missing")
    if st.corpid is not None and corpid != st.corpid:
        return reject(st, "token", 40013, "invalid corpid")
    if st.corpsecret is not None and corpsecret != st.corpsecret:
        return reject(st, "token", 40001, "invalid credential")
    token, expires_in = st.issue_wecom_token(corpid, corpsecret)
    return JSONResponse({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": expires_in})
