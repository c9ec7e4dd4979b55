"""The mini program's APIs: subscribe messages (one credit each) and the js_code login."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from leadpush_fakes.wechat.replies import json_body, reject, state_of
from leadpush_fakes.wechat.rules import SUBSCRIBE_PATH, check_data_value, data_type_of
from leadpush_fakes.wechat.state import FakeWeChatState
from leadpush_fakes.wechat.tokens import check_app_credentials

router = APIRouter()

_ENUMS = (
    ("miniprogram_state", ("developer", "trial", "formal")),
    ("lang", ("zh_CN", "en_US", "zh_HK", "zh_TW")),
)


def _check_subscribe(st: FakeWeChatState, body: dict[str, Any]) -> tuple[int, str | None]:
    """(0, None) when the message is acceptable, else the errcode (and errmsg detail), in the platform's order."""
    if not st.openid_ok(body.get("touser")):
        return 40003, None
    if not st.template_ok(body.get("template_id")):
        return 40037, None
    if not st.page_ok(body.get("page")):
        return 41030, None
    for name, allowed in _ENUMS:
        if name in body and body[name] not in allowed:
            return 47003, f"argument invalid! {name} invalid"
    data = body.get("data")
    if not isinstance(data, dict):
        return 47003, "argument invalid! data invalid"
    for key, item in data.items():
        value = item.get("value") if isinstance(item, dict) else None
        if not check_data_value(data_type_of(key), value):
            return 47003, f"argument invalid! data.{key}.value invalid"
    return 0, None


@router.post(SUBSCRIBE_PATH)
async def subscribe_send(request: Request) -> JSONResponse:
    st = state_of(request)
    code = st.check_token(request.query_params.get("access_token"), "wechat")
    if code:
        return reject(st, "subscribe", code)
    code = st.take_quota("subscribe")  # the day's send quota (subscribe_daily_quota): 45009 beyond it
    if code:
        return reject(st, "subscribe", code)
    body = await json_body(request)
    if not isinstance(body, dict):
        return reject(st, "subscribe", 47001)
    code, detail = _check_subscribe(st, body)
    if code:
        return reject(st, "subscribe", code, detail)
    msgid = st.consume_subscribe(body["touser"], body["template_id"], body)
    if msgid is None:
        return reject(st, "subscribe", 43101)
    return JSONResponse({"errcode": 0, "errmsg": "ok", "msgid": msgid})


@router.get("/sns/jscode2session")
async def jscode2session(request: Request) -> JSONResponse:
    st = state_of(request)
    q = request.query_params
    code = st.take_quota("jscode2session")  # jscode2session_per_minute: 45011 beyond it
    if code:
        return reject(st, "jscode2session", code)
    bad = check_app_credentials(st, "jscode2session", q.get("appid"), q.get("secret"))
    if bad is not None:
        return bad
    if q.get("grant_type", "authorization_code") != "authorization_code":
        return reject(st, "jscode2session", 40002)
    code = q.get("js_code")
    if not code:
        return reject(st, "jscode2session", 41008)
    found = st.login(code)
    if found is None:
        return reject(st, "jscode2session", 40029)
    openid, unionid = found
    out: dict[str, Any] = {"openid": openid, "session_key": secrets.token_urlsafe(18)}
    if unionid:
        out["unionid"] = unionid
    return JSONResponse(out)
