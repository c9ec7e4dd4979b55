"""WeCom's app message API: content rules, the recipient list, and per-member pacing (silent drops)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from leadpush_fakes.wechat.replies import reject, state_of
from leadpush_fakes.wechat.rules import WECOM_MSGTYPES, WECOM_SEND_PATH, check_wecom_content, has_non_ascii_u_escape
from leadpush_fakes.wechat.state import FakeWeChatState

router = APIRouter()

MAX_RECIPIENTS = 1000


def _parse_body(raw: bytes) -> tuple[int, dict[str, Any]]:
    """(0, body), or the errcode for a body WeCom refuses to read."""
    if has_non_ascii_u_escape(raw):
        return 40033, {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        body = None
    return (0, body) if isinstance(body, dict) else (47001, {})


def _check_message(st: FakeWeChatState, body: dict[str, Any]) -> int:
    """0 when agent, message type and content pass; else the errcode."""
    agentid = body.get("agentid")
    if not isinstance(agentid, int) or isinstance(agentid, bool) or (st.agentid is not None and agentid != st.agentid):
        return 40056
    msgtype = body.get("msgtype")
    if msgtype not in WECOM_MSGTYPES:
        return 40008
    return check_wecom_content(msgtype, body)


def _requested_users(touser: Any) -> list[str]:
    """``a|B|a`` -> ``["a", "b"]``: lower-cased, de-duplicated, in order."""
    parts = (part.strip().lower() for part in (touser if isinstance(touser, str) else "").split("|"))
    return list(dict.fromkeys(user for user in parts if user))


def _everyone(st: FakeWeChatState, requested: list[str]) -> list[str]:
    """``@all`` means every registered member (or anyone, when none are registered)."""
    if requested != ["@all"]:
        return requested
    with st.lock:
        return sorted(st.wecom_users) or ["@all"]


@router.post(WECOM_SEND_PATH)
async def wecom_send(request: Request) -> JSONResponse:
    st = state_of(request)
    code = st.check_token(request.query_params.get("access_token"), "wecom")
    if code:
        return reject(st, "wecom", code)
    code, body = _parse_body(await request.body())
    code = code or _check_message(st, body)
    if code:
        return reject(st, "wecom", code)
    requested = _requested_users(body.get("touser"))
    if len(requested) > MAX_RECIPIENTS:
        return reject(st, "wecom", 40031)
    requested = _everyone(st, requested)
    valid = [u for u in requested if u == "@all" or st.wecom_user_known(u)]
    invalid = [u for u in requested if u not in valid]
    extra = {
        "invaliduser": "|".join(invalid),
        "invalidparty": str(body.get("toparty") or ""),
        "invalidtag": str(body.get("totag") or ""),
        "unlicenseduser": "",
    }
    if not valid:
        return reject(st, "wecom", 81013, **extra)
    msgid, _delivered, _dropped = st.deliver_wecom(body["agentid"], valid, invalid, body)
    return JSONResponse({"errcode": 0, "errmsg": "ok", **extra, "msgid": msgid})
