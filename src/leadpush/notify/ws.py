"""WebSocket `/ws?token=…`: resume by id, then live notifications; acks, read marks, heartbeats.

Protocol (JSON text frames):
- server → client: `{"type":"hello","data":{"userId","latestId","unread"}}` once; each notification as
  `{"id","prevId","type","title","body","createdAt","data"}`; `{"type":"unread","data":{"unread":n}}`;
  `{"type":"heartbeat"}` every 25 s (LEADPUSH_WS_HEARTBEAT_SECONDS; one hub-wide task sends them all); `{"type":"pong"}`; `{"type":"error","code","message"}`.
- client → server: `{"type":"resume","after":<id>}` (or `?after=` on the URL) first, to get everything
  after that id before live messages; `{"type":"ack","ids":[…]}` marks delivered;
  `{"type":"read","ids":[…]}` marks read; `{"type":"ping"}`.
A bad token is accepted and closed at once with code 1008 (policy violation); after too many failed
sign-ins from the client's address, with 4429 (retry later). When the token is revoked
or the user deactivated, the socket is closed with 4401 (signed out; do not reconnect with that token).
More than LEADPUSH_WS_MAX_PER_USER sockets of one user on a process: the new one is closed with 1013 (try
again later). A message larger than LEADPUSH_WS_MAX_MESSAGE_BYTES closes the socket with 1009 (uvicorn).

Sending (issue 17): a message's JSON text is encoded once however many of the user's sockets send it
(`Hub.text_of`; the same compact text starlette's `send_json` wrote). A socket whose writer task is idle
(synced, nothing queued, no send in progress) writes a pushed notification that follows its last one, and
its heartbeat, at once from the event loop (`SendNow` under `leadpush serve`, src/leadpush/wsprotocol.py)
instead of queueing it for the writer; anything else (a gap, a paused transport, a busy writer) is queued
and sent by the writer as before, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy import and_, or_, select

from leadpush.context import AppContext
from leadpush.db import Database
from leadpush.deps import authenticate_or_refuse
from leadpush.errors import ApiError
from leadpush.notify import service
from leadpush.notify.hub import Hub, encode
from leadpush.notify.ledger import unread_count
from leadpush.notify.models import Notification
from leadpush.users.service import hash_token
from leadpush.wsprotocol import SEND_NOW, SendNow

log = logging.getLogger(__name__)
router = APIRouter()

RESUME_GRACE = 0.5
# Queued by the hub's heartbeat task and sent by the writer like any message (identity marks it).
HEARTBEAT: dict[str, Any] = {"type": "heartbeat"}
HEARTBEAT_TEXT = encode(HEARTBEAT)
CATCH_UP_PAGE = 500
SIGNED_OUT = 4401
TOO_MANY_SOCKETS = 1013


class WsConnection:
    long_lived = True
    follows_ledger = True

    def __init__(self, ws: WebSocket, ctx: AppContext, user_id: int, token_hash: str, hub: Hub | None = None) -> None:
        self.ws = ws
        self.hub = hub
        self.ctx = ctx
        self.user_id = user_id
        self.token_hash = token_hash
        self.ended = False
        self._closing: asyncio.Task[None] | None = None  # referenced: the loop keeps tasks only weakly
        self.last_sent = 0
        # (message or None for "re-read", its text if encoded already)
        self.queue: asyncio.Queue[tuple[dict[str, Any] | None, str | None]] = asyncio.Queue()
        # The writer waits for the queue with nothing queued or in flight: `offer` may write itself.
        self._idle = False
        # Write a frame at once (leadpush serve's protocol, wsprotocol.py); None: always through the writer.
        self._send_now: SendNow | None = (ws.scope.get("extensions") or {}).get(SEND_NOW)
        self.synced = asyncio.Event()
        self.send_lock = asyncio.Lock()
        self.beat_every = ctx.settings.ws_heartbeat_seconds
        self.beat_due = time.monotonic() + self.beat_every

    def heartbeat(self, now: float) -> float:
        """Called by the hub's heartbeat task on the loop: send (or queue) a heartbeat when this socket's is
        due; when the next one is."""
        if now >= self.beat_due:
            self.beat_due = now + self.beat_every
            if not (self._can_send_now() and self._send_now(HEARTBEAT_TEXT)):  # type: ignore[misc]
                self._enqueue(HEARTBEAT, HEARTBEAT_TEXT)
        return self.beat_due

    def after(self) -> int | None:
        return self.last_sent if self.synced.is_set() else None

    def offer(self, message: dict[str, Any] | None) -> None:
        if message is None:
            self._enqueue(None, None)
            return
        try:
            text: str | None = self.hub.text_of(message) if self.hub is not None else encode(message)
        except (TypeError, ValueError):  # not JSON: the writer's send fails and closes the socket, as ever
            text = None
        if text is not None and self._can_send_now():
            # What the writer would do with it, without waking the writer (a task switch per message).
            if message["id"] <= self.last_sent:
                return  # already sent (by a catch-up)
            if (message.get("prevId") or 0) <= self.last_sent and self._send_now(text):  # type: ignore[misc]
                self.last_sent = message["id"]
                return
        self._enqueue(message, text)

    def _can_send_now(self) -> bool:
        return self._idle and self._send_now is not None and not self.ended and not self.send_lock.locked()

    def _enqueue(self, message: dict[str, Any] | None, text: str | None) -> None:
        self._idle = False  # the writer owns the order until it has sent what is queued
        self.queue.put_nowait((message, text))

    async def send(self, payload: dict[str, Any], text: str | None = None) -> None:
        async with self.send_lock:
            if not self.ended:  # nothing more reaches a signed-out socket, not even what was queued
                await self.ws.send_text(encode(payload) if text is None else text)

    def end_session(self) -> None:
        if self.ended:
            return
        self.ended = True
        self._closing = asyncio.create_task(self._close_signed_out())

    async def _close_signed_out(self) -> None:
        async with self.send_lock:  # after a send in progress, never in the middle of one
            with contextlib.suppress(Exception):
                await self.ws.close(code=SIGNED_OUT, reason="登录凭证已失效")

    def _read_after(self, after: int) -> list[dict[str, Any]]:
        with self.ctx.db.read() as session:
            rows = service.notifications_after(session, self.user_id, after, CATCH_UP_PAGE)
            return [service.message_of(n) for n in rows]

    async def catch_up(self) -> None:
        while True:
            messages = await to_thread.run_sync(self._read_after, self.last_sent)
            for message in messages:
                await self.send(message)
                self.last_sent = message["id"]
            if len(messages) < CATCH_UP_PAGE:
                return

    async def writer(self) -> None:
        try:
            await self._write_loop()
        except Exception as exc:  # noqa: BLE001
            # Most likely the database is unreachable. Close rather than linger silently: the client
            # reconnects with backoff and resumes from its last id, so nothing is lost.
            log.warning("WebSocket 推送中断（%s），关闭连接让客户端重连", type(exc).__name__)
            with contextlib.suppress(Exception):
                await self.ws.close(code=1011, reason="temporarily unavailable")

    async def _write_loop(self) -> None:
        await self.synced.wait()
        await self.catch_up()
        await self.send_unread()
        while True:
            if self.queue.empty():
                self._idle = True
            message, text = await self.queue.get()
            self._idle = False
            if message is HEARTBEAT:
                await self.send(HEARTBEAT, HEARTBEAT_TEXT)
                continue
            if message is not None and message["id"] <= self.last_sent:
                continue  # already sent (by a catch-up)
            if message is not None and (message.get("prevId") or 0) <= self.last_sent:
                await self.send(message, text)
                self.last_sent = message["id"]
            else:
                await self.catch_up()

    async def send_unread(self) -> None:
        def count() -> int:
            with self.ctx.db.read() as session:
                return unread_count(session, self.user_id)

        await self.send({"type": "unread", "data": {"unread": await to_thread.run_sync(count)}})

    def resume_from(self, after: int) -> None:
        self.last_sent = max(0, after)
        if self.synced.is_set():
            self.offer(None)
        self.synced.set()

    async def mark(self, ids: Any, read: bool) -> None:
        if (
            not isinstance(ids, list)
            or len(ids) > 1000
            or not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i < 2**31 for i in ids)
        ):
            await self.send({"type": "error", "code": "invalid_ids", "message": "ids 必须是整数列表（最多 1000 个）"})
            return

        def write() -> None:
            with self.ctx.db.write() as session:
                service.mark(session, self.user_id, ids, self.ctx.clock.now(), read=read, signals=self.ctx.signals)

        await to_thread.run_sync(write)
        if read:
            await self.send_unread()


# The hub's coalesced catch-up (hub.py): users per statement, and rows per statement; when a statement
# fills its page, the users it may have cut short re-read for themselves.
BATCH_USERS = 100
BATCH_PAGE = CATCH_UP_PAGE


def read_after_many(db: Database, afters: dict[int, int]) -> tuple[dict[int, list[dict[str, Any]]], set[int]]:
    """Each user's notifications after its id, in id order, as pushed; and the users cut short."""
    found: dict[int, list[dict[str, Any]]] = {}
    cut: set[int] = set()
    items = sorted(afters.items())
    with db.read() as session:
        for start in range(0, len(items), BATCH_USERS):
            chunk = items[start : start + BATCH_USERS]
            page = BATCH_PAGE
            rows = session.scalars(
                select(Notification)
                .where(or_(*(and_(Notification.recipient_id == uid, Notification.id > after) for uid, after in chunk)))
                .order_by(Notification.recipient_id, Notification.id)
                .limit(page)
            ).all()
            for n in rows:
                found.setdefault(n.recipient_id, []).append(service.message_of(n))
            if len(rows) >= page:
                last = rows[-1].recipient_id
                cut.update(uid for uid, _ in chunk if uid >= last)
    for uid in cut:
        found.pop(uid, None)
    return found, cut


# Close codes a client can act on: a bad token is final (1008); a lockout after too many failed sign-ins
# from the client's address ends within a minute, so the client retries later with backoff.
WS_INVALID_TOKEN = 1008
WS_TOO_MANY_FAILURES = 4429


def _authenticate(ctx: AppContext, token: str, address: str) -> tuple[int, int] | ApiError:
    try:
        user = authenticate_or_refuse(ctx, token, address)
    except ApiError as exc:
        return exc
    with ctx.db.read() as session:
        return user.id, service.latest_id(session, user.id)


@router.websocket("/ws")
async def websocket_endpoint(ws: WebSocket) -> None:
    ctx: AppContext = ws.app.state.ctx
    hub: Hub = ws.app.state.runtime.hub
    token = ws.query_params.get("token", "")
    address = ws.client.host if ws.client else "unknown"
    found = await to_thread.run_sync(_authenticate, ctx, token, address) if token else None
    await ws.accept()
    if isinstance(found, ApiError) and found.status == 429:
        await ws.close(code=WS_TOO_MANY_FAILURES, reason="too many failed sign-ins, retry later")
        return
    if found is None or isinstance(found, ApiError):
        await ws.close(code=WS_INVALID_TOKEN, reason="invalid token")
        return
    user_id, latest = found
    conn = WsConnection(ws, ctx, user_id, hash_token(token), hub)
    if not hub.try_register(user_id, conn, ctx.settings.ws_max_per_user):
        await ws.close(code=TOO_MANY_SOCKETS, reason="连接数过多，请稍后再试")
        return
    after = ws.query_params.get("after")
    if after is not None and after.isdigit():
        conn.resume_from(int(after))
    await conn.send({"type": "hello", "data": {"userId": user_id, "latestId": latest}})
    writer = asyncio.create_task(conn.writer())
    try:
        # The token was checked before this socket was registered: a revoke committed in between was
        # announced to a hub that did not know the socket yet. One more look closes that gap.
        await hub.revalidate({user_id})
        if not conn.synced.is_set():
            # A client that does not resume within the grace period starts from "now" (the id read at
            # connect time, so nothing committed meanwhile is skipped).
            first = await _receive(ws, timeout=RESUME_GRACE)
            if first is not None and first.get("type") == "resume":
                conn.resume_from(_as_int(first.get("after"), latest))
            else:
                conn.resume_from(latest)
                if first is not None:
                    await _handle(conn, first)
        while True:
            message = await _receive(ws, timeout=None)
            if message is not None:
                await _handle(conn, message)
            if writer.done():
                break
    except WebSocketDisconnect:
        pass
    except Exception:  # noqa: BLE001
        log.debug("websocket closed with error", exc_info=True)
    finally:
        hub.unregister(user_id, conn)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer


def _as_int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31 else default


async def _receive(ws: WebSocket, timeout: float | None) -> dict[str, Any] | None:
    try:
        if timeout is None:
            data = await ws.receive_json()
        else:
            data = await asyncio.wait_for(ws.receive_json(), timeout=timeout)
    except TimeoutError:
        return None
    except ValueError:
        await ws.send_json({"type": "error", "code": "invalid_json", "message": "消息必须是 JSON 对象"})
        return None
    return data if isinstance(data, dict) else None


async def _handle(conn: WsConnection, message: dict[str, Any]) -> None:
    kind = message.get("type")
    if kind == "resume":
        conn.resume_from(_as_int(message.get("after"), conn.last_sent))
    elif kind == "ack":
        await conn.mark(message.get("ids"), read=False)
    elif kind == "read":
        await conn.mark(message.get("ids"), read=True)
    elif kind == "ping":
        await conn.send({"type": "pong"})
    else:
        # A fixed answer: echoing what the client sent would reflect arbitrary text back to it.
        await conn.send({"type": "error", "code": "unknown_type", "message": "不支持的消息类型"})
