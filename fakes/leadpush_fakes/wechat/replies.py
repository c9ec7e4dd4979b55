"""How the fake answers like the platform: HTTP 200 with a JSON ``errcode``, each rejection counted."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from leadpush_fakes.wechat.rules import errmsg
from leadpush_fakes.wechat.state import FakeWeChatState


def state_of(request: Request) -> FakeWeChatState:
    """The state of the app serving this request (one per `create_app`)."""
    state: FakeWeChatState = request.app.state.fake
    return state


def reject(st: FakeWeChatState, kind: str, errcode: int, detail: str | None = None, **extra: Any) -> JSONResponse:
    """Count the rejection under `kind` and answer with the platform's errcode and errmsg."""
    st.record_reject(kind, errcode)
    return JSONResponse({"errcode": errcode, "errmsg": errmsg(errcode, detail), **extra})


async def json_body(request: Request) -> Any:
    """The request's JSON, or None when it is not JSON (the platform then answers 47001)."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
