"""Injected faults applied at the raw ASGI level, before routing: errcode, HTTP error, slow, late, drop.

`slow` waits before handling the request (a sender that gives up meanwhile sent nothing); `late` handles
it at once and holds back the answer (the platform took the message; a sender that dies meanwhile never
learns so: a send caught mid-flight).
"""

from __future__ import annotations

import asyncio
import json
import logging

from fastapi import FastAPI
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from leadpush_fakes.wechat.rules import errmsg
from leadpush_fakes.wechat.state import FakeWeChatState

log = logging.getLogger(__name__)


class FakeWeChatApp(FastAPI):
    """FastAPI app that applies injected faults at the raw ASGI level (before routing)."""

    fake_state: FakeWeChatState

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/_fake/"):
            fault = self.fake_state.pick_fault(scope["path"])
            if fault is not None:
                if fault.kind == "slow":
                    await asyncio.sleep(fault.delay)
                elif fault.kind == "late":
                    send = _answer_late(send, fault.delay)
                elif fault.kind == "drop":
                    await _drop_connection(receive, send)
                    return
                elif fault.kind == "http":
                    await _send_raw(send, fault.status, b"<html><body>fake fault</body></html>", b"text/html")
                    return
                else:
                    self.fake_state.record_reject("fault", fault.errcode)
                    payload = {"errcode": fault.errcode, "errmsg": errmsg(fault.errcode, fault.errmsg)}
                    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
                    await _send_raw(send, 200, data, b"application/json")
                    return
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:
            # The sender gave up (e.g. timed out during a 'slow' fault) before its body was read: nothing
            # was accepted. One line, not a traceback: a fault run does this thousands of times.
            log.info("fake wechat: client went away before its request was read: %s", scope["path"])


def _answer_late(send: Send, delay: float) -> Send:
    """`send`, holding the response back `delay` seconds (the request has been handled by then)."""

    async def late(message: Message) -> None:
        if message["type"] == "http.response.start":
            await asyncio.sleep(delay)
        await send(message)

    return late


async def _send_raw(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class ConnectionDropped(ConnectionError):
    """Raised when a 'drop' fault fires outside uvicorn (e.g. under httpx.ASGITransport)."""


async def _drop_connection(receive: Receive, send: Send) -> None:
    """Close the TCP connection without answering, so the client sees a protocol error."""
    # Read the request body first: closing a socket with unread data sends a RST, and the
    # client would see a reset (ReadError) instead of an orderly "disconnected" (RemoteProtocolError).
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    cycle = getattr(send, "__self__", None)  # uvicorn's RequestResponseCycle
    transport = getattr(cycle, "transport", None)
    if transport is not None and hasattr(cycle, "disconnected"):
        transport.close()
        cycle.disconnected = True  # tell uvicorn not to send its own 500 afterwards
        return
    # Fallback: start a response that never completes, then fail; servers abort the connection.
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]})
    raise ConnectionDropped("fake wechat: connection dropped by fault injection")
