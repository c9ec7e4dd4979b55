"""Control endpoints under ``/_fake/``: what tests and benchmarks use to set up, inspect and break the fake.

Each one does over HTTP what a method of :class:`FakeWeChatState` does in process. They are never
faulted. A malformed control request gets HTTP 400 ``{"error": ...}`` (not the platform's format).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from leadpush_fakes.wechat.replies import state_of
from leadpush_fakes.wechat.rules import MESSAGE_KINDS

router = APIRouter(prefix="/_fake")


async def control_body(request: Request) -> dict[str, Any]:
    """The JSON object sent (an empty body is ``{}``); ValueError for anything else."""
    raw = await request.body()
    if not raw.strip():
        return {}
    body = json.loads(raw)
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    return body


def bad_request(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


# ---- inspect and reset ------------------------------------------------------------------


@router.post("/reset")
async def reset(request: Request) -> JSONResponse:
    try:
        body = await control_body(request)
    except ValueError as exc:
        return bad_request(str(exc))
    state_of(request).reset(full=bool(body.get("full", False)))
    return JSONResponse({"ok": True})


@router.get("/stats")
async def stats(request: Request) -> JSONResponse:
    return JSONResponse(state_of(request).stats())


@router.get("/messages")
async def messages(request: Request, kind: str | None = None) -> JSONResponse:
    if kind is not None and kind not in MESSAGE_KINDS:
        return bad_request(f"kind must be one of {list(MESSAGE_KINDS)}")
    found = state_of(request).get_messages(kind)
    return JSONResponse({"count": len(found), "messages": found})


@router.post("/clock/advance")
async def advance(request: Request) -> JSONResponse:
    try:
        body = await control_body(request)
        seconds = float(body["seconds"])
    except (ValueError, KeyError, TypeError) as exc:
        return bad_request(f"expected {{seconds}}: {exc}")
    return JSONResponse({"now": state_of(request).advance(seconds)})


@router.post("/config")
async def config(request: Request) -> JSONResponse:
    try:
        body = await control_body(request)
        return JSONResponse(state_of(request).configure(**body))
    except (ValueError, TypeError) as exc:
        return bad_request(str(exc))


@router.get("/quotas")
async def quotas(request: Request) -> JSONResponse:
    """Calls counted against the limits today (platform day) and this minute, and the forced refreshes."""
    return JSONResponse(state_of(request).quota_usage())


@router.post("/quotas/clear")
async def clear_quotas(request: Request) -> JSONResponse:
    """As the platform's clear_quota: the daily counts start again from 0 (forced refreshes too)."""
    state_of(request).clear_quota()
    return JSONResponse(state_of(request).quota_usage())


# ---- credits, tokens, login codes ---------------------------------------------------------


@router.post("/credits")
async def add_credits(request: Request) -> JSONResponse:
    try:
        body = await control_body(request)
        openid, template_id = str(body["openid"]), str(body["templateId"])
        count = int(body.get("count", 1))
    except (ValueError, KeyError, TypeError) as exc:
        return bad_request(f"expected {{openid, templateId, count}}: {exc}")
    balance = state_of(request).add_credits(openid, template_id, count)
    return JSONResponse({"openid": openid, "templateId": template_id, "count": balance})


@router.get("/credits")
async def get_credits(request: Request, openid: str, templateId: str) -> JSONResponse:
    count = state_of(request).get_credits(openid, templateId)
    return JSONResponse({"openid": openid, "templateId": templateId, "count": count})


@router.get("/tokens")
async def tokens(request: Request) -> JSONResponse:
    return JSONResponse({"tokens": state_of(request).list_tokens()})


@router.post("/tokens/expire")
async def expire_tokens(request: Request) -> JSONResponse:
    try:
        body = await control_body(request)
    except ValueError as exc:
        return bad_request(str(exc))
    return JSONResponse({"changed": state_of(request).expire_tokens(body.get("token"))})


@router.post("/tokens/revoke")
async def revoke_tokens(request: Request) -> JSONResponse:
    try:
        body = await control_body(request)
    except ValueError as exc:
        return bad_request(str(exc))
    return JSONResponse({"changed": state_of(request).revoke_tokens(body.get("token"))})


@router.post("/codes")
async def codes(request: Request) -> JSONResponse:
    try:
        body = await control_body(request)
        code, openid = str(body["code"]), str(body["openid"])
    except (ValueError, KeyError) as exc:
        return bad_request(f"expected {{code, openid, unionid?}}: {exc}")
    state_of(request).register_code(code, openid, body.get("unionid"))
    return JSONResponse({"ok": True})


# ---- who and what the platform knows ------------------------------------------------------


def _strings(body: dict[str, Any], key: str) -> list[str]:
    return [str(item) for item in body.get(key, [])]


@router.post("/wecom/users")
async def wecom_users(request: Request) -> JSONResponse:
    try:
        body = await control_body(request)
        users = _strings(body, "users")
    except (ValueError, TypeError) as exc:
        return bad_request(str(exc))
    current = state_of(request).add_wecom_users(*users, replace=bool(body.get("replace", False)))
    return JSONResponse({"users": sorted(current)})


@router.post("/wecom/login")
async def wecom_login(request: Request) -> JSONResponse:
    """Who the next sign-in codes stand for: ``{"userid": "alice"}`` (a member), ``{"openid": "o…"}``
    (someone outside the corp) or ``{}`` (nobody)."""
    try:
        body = await control_body(request)
        userid, openid = body.get("userid"), body.get("openid")
        if not all(v is None or (isinstance(v, str) and v) for v in (userid, openid)):
            raise ValueError("userid / openid must be non-empty strings")
    except ValueError as exc:
        return bad_request(str(exc))
    identity = state_of(request).set_wecom_login(userid=userid, openid=openid)
    return JSONResponse({"identity": None if identity is None else {identity[0]: identity[1]}})


@router.post("/openids")
async def openids(request: Request) -> JSONResponse:
    try:
        body = await control_body(request)
        found = _strings(body, "openids")
    except (ValueError, TypeError) as exc:
        return bad_request(str(exc))
    state_of(request).register_openid(*found)
    return JSONResponse({"ok": True})


@router.post("/templates")
async def templates(request: Request) -> JSONResponse:
    try:
        body = await control_body(request)
        found = _strings(body, "templates")
    except (ValueError, TypeError) as exc:
        return bad_request(str(exc))
    state_of(request).register_template(*found, long_term=bool(body.get("longTerm", False)))
    return JSONResponse({"ok": True})


# ---- faults -------------------------------------------------------------------------------


@router.post("/faults")
async def add_fault(request: Request) -> JSONResponse:
    try:
        body = await control_body(request)
        fault = state_of(request).add_fault(
            str(body.get("path", "*")),
            str(body.get("kind", "errcode")),
            errcode=int(body.get("errcode", -1)),
            errmsg=body.get("errmsg"),
            status=int(body.get("status", 502)),
            delay=float(body.get("delay", 1.0)),
            count=None if body.get("count") is None else int(body["count"]),
            rate=None if body.get("rate") is None else float(body["rate"]),
            seed=body.get("seed"),
        )
    except (ValueError, TypeError) as exc:
        return bad_request(str(exc))
    return JSONResponse(fault.to_dict())


@router.get("/faults")
async def list_faults(request: Request) -> JSONResponse:
    st = state_of(request)
    with st.lock:
        faults = [f.to_dict() for f in st.faults]
    return JSONResponse({"faults": faults})


@router.delete("/faults")
async def clear_faults(request: Request) -> JSONResponse:
    state_of(request).clear_faults()
    return JSONResponse({"ok": True})
