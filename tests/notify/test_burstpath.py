"""The push path's CPU per message (issue 17, the cross-process burst): a message is encoded once however many
sockets send it; short frames go out uncompressed (what the client reads is the same text); a socket whose
writer is idle writes a pushed notification at once from the event loop, still once each and in id order.

The server here is leadpush's own WebSocket protocol (`leadpush serve`, src/leadpush/wsprotocol.py) in
this process, an api-only stack beside the shared one on the same database, so the test reaches its hub."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from support import REDIS_URL, require_redis
from support.buses import bus_pair, running, until
from support.servers import ServerThread, make_settings
from support.wsclient import WsClient
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.sync.client import connect

from leadpush.app import create_app
from leadpush.context import AppContext
from leadpush.notify import service
from leadpush.notify.hub import Hub
from leadpush.notify.models import Notification
from leadpush.wsprotocol import protocol_class


class _Node:
    def __init__(self, url: str) -> None:
        self.ctx = AppContext.from_settings(make_settings(url))
        self.app = create_app(self.ctx, roles=frozenset({"api"}))
        self.server = ServerThread(self.app, ws_max_size=self.ctx.settings.ws_max_message_bytes)
        # As `leadpush serve` configures uvicorn (the setting's defaults: no context takeover, 10 bits).
        self.server.server.config.ws = protocol_class(False, 10)
        self.server.start()
        self.url = self.server.url
        self.runtime = self.app.state.runtime

    def on_loop(self, fn: Any) -> Any:
        """Run `fn` on the node's event loop, in one callback; its result."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.runtime._loop).result(timeout=30)

    def stop(self) -> None:
        self.server.stop()
        self.ctx.db.dispose()


@pytest.fixture
def burstpath_node(api) -> Iterator[_Node]:
    node = _Node(api.ctx.settings.database_url)
    try:
        yield node
    finally:
        node.stop()


def _write_notes(ctx, uid: int, bodies: list[str]) -> list[dict[str, Any]]:
    """Notifications for `uid`, chained by prev_id, in one transaction; as pushed."""
    out = []
    with ctx.db.write() as session:
        prev = None
        for body in bodies:
            n = Notification(
                recipient_id=uid,
                kind="customer_assigned",
                title="新线索",
                body=body,
                payload={"customerId": 1},
                dedupe_key=f"burstpath-{uuid.uuid4().hex}",
                prev_id=prev,
            )
            session.add(n)
            session.flush()
            prev = n.id
            out.append(service.message_of(n))
    return out


class _RecordingDeflate(Extension):
    """The client's permessage-deflate, noting each data frame's RSV1 bit (set: compressed) as it arrives."""

    def __init__(self, inner: Extension, seen: list[bool]) -> None:
        self.inner = inner
        self.name = inner.name
        self.seen = seen

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self.seen.append(frame.rsv1)
        return self.inner.decode(frame, max_size=max_size)

    def encode(self, frame: Frame) -> Frame:
        return self.inner.encode(frame)


class _RecordingFactory(ClientPerMessageDeflateFactory):
    def __init__(self, seen: list[bool]) -> None:
        super().__init__(client_max_window_bits=True)
        self.seen = seen

    def process_response_params(self, params, accepted_extensions):  # noqa: ANN001, ANN201
        return _RecordingDeflate(super().process_response_params(params, accepted_extensions), self.seen)


def _raw_socket(node: _Node, token: str, seen: list[bool], after: int | None = None):  # noqa: ANN202
    url = node.url.replace("http://", "ws://") + f"/ws?token={token}"
    if after is not None:
        url += f"&after={after}"
    return connect(url, open_timeout=10, compression=None, extensions=[_RecordingFactory(seen)])


def _recv_until(ws, kind: str) -> list[str]:  # noqa: ANN001
    texts: list[str] = []
    while not texts or json.loads(texts[-1]).get("type") != kind:
        texts.append(ws.recv(timeout=30))
    return texts


def test_burstpath_short_frames_go_uncompressed_long_ones_compressed_same_text(api, burstpath_node):
    user = api.user("压缩")
    long_body = "客户留言：" + "请尽快回电，" * 150  # ~2 KB of UTF-8
    [note] = _write_notes(api.ctx, user.id, [long_body])
    seen: list[bool] = []
    with _raw_socket(burstpath_node, user.token, seen, after=0) as ws:
        texts = _recv_until(ws, "unread")
        ws.send(json.dumps({"type": "ping"}))
        texts += _recv_until(ws, "pong")
    messages = [json.loads(t) for t in texts]
    assert [m.get("type") for m in messages] == ["hello", "customer_assigned", "unread", "pong"]
    # hello, unread and pong are a few dozen bytes: sent as they are. The 2 KB notification is compressed.
    assert seen == [False, True, False, False]
    # The text is what it always was: compact JSON with the characters as they are.
    assert texts[1] == json.dumps(messages[1], separators=(",", ":"), ensure_ascii=False)
    assert messages[1]["id"] == note["id"] and messages[1]["body"] == long_body


def test_burstpath_a_message_is_encoded_once_for_all_of_a_users_sockets(api, burstpath_node, monkeypatch):
    user = api.user("多标签")
    tabs = [WsClient(burstpath_node.url, user.token, resume=0) for _ in range(3)]
    for tab in tabs:
        tab.next_of("unread")
    message = {"id": 2_000_000_000, "prevId": None, "type": "customer_assigned", "title": "新线索", "body": "张三"}
    message |= {"createdAt": "2026-12-01T00:00:00Z", "readAt": None, "deliveredAt": None, "data": {"customerId": 7}}
    encoded: list[Any] = []
    real_dumps = json.dumps

    def counting(obj: Any, *args: Any, **kwargs: Any) -> str:
        if obj is message:
            encoded.append(obj)
        return real_dumps(obj, *args, **kwargs)

    monkeypatch.setattr(json, "dumps", counting)
    burstpath_node.on_loop(lambda: burstpath_node.runtime.hub.deliver(user.id, message))
    for tab in tabs:
        assert [m["id"] for m in tab.notifications(1)] == [message["id"]]
    monkeypatch.setattr(json, "dumps", real_dumps)
    for tab in tabs:
        assert [m["id"] for m in tab.drain(0.3)] == [message["id"]]  # once each
        tab.close()
    assert len(encoded) == 1


def _connection(node: _Node, uid: int) -> Any:
    [conn] = node.runtime.hub._listeners[uid]
    return conn


def test_burstpath_an_idle_socket_writes_a_pushed_message_within_the_delivery(api, burstpath_node):
    user = api.user("直发")
    tab = WsClient(burstpath_node.url, user.token, resume=0)
    tab.next_of("unread")
    [first, second] = _write_notes(api.ctx, user.id, ["一", "二"])
    node = burstpath_node

    def deliver_and_look() -> tuple[int, int]:
        node.runtime.hub.deliver(user.id, first)
        # Written in this very callback: no writer task had a turn yet.
        return _connection(node, user.id).last_sent, _connection(node, user.id).queue.qsize()

    assert node.on_loop(deliver_and_look) == (first["id"], 0)
    assert (
        node.on_loop(lambda: (node.runtime.hub.deliver(user.id, second), _connection(node, user.id).last_sent)[1])
        == (second["id"])
    )
    assert [m["id"] for m in tab.notifications(2)] == [first["id"], second["id"]]
    assert [m["id"] for m in tab.drain(0.3)] == [first["id"], second["id"]]
    tab.close()


def test_burstpath_a_gap_still_reads_the_ledger_and_keeps_id_order_once_each(api, burstpath_node):
    user = api.user("补读")
    tab = WsClient(burstpath_node.url, user.token, resume=0)
    tab.next_of("unread")
    notes = _write_notes(api.ctx, user.id, ["一", "二", "三"])
    node = burstpath_node
    # Only the last one is offered: its prevId names one this socket never sent, so it re-reads the gap;
    # then the first one arrives late (already sent by the re-read: skipped), and the middle one again.
    node.on_loop(lambda: node.runtime.hub.deliver(user.id, notes[2]))
    assert [m["id"] for m in tab.notifications(3)] == [n["id"] for n in notes]
    node.on_loop(lambda: [node.runtime.hub.deliver(user.id, n) for n in (notes[0], notes[1])])
    assert [m["id"] for m in tab.drain(0.5)] == [n["id"] for n in notes]
    tab.close()


def test_burstpath_a_heartbeat_of_an_idle_socket_is_written_at_once(api, burstpath_node):
    user = api.user("心跳")
    tab = WsClient(burstpath_node.url, user.token, resume=0)
    tab.next_of("unread")
    node = burstpath_node

    def beat() -> int:
        conn = _connection(node, user.id)
        conn.beat_due = 0.0
        conn.heartbeat(time.monotonic())
        return conn.queue.qsize()

    assert node.on_loop(beat) == 0
    tab.next_of("heartbeat", timeout=10)
    tab.close()


class _Beating:
    """A listener with a heartbeat every `every` seconds, counting how often the hub asks it."""

    long_lived = True
    follows_ledger = False
    token_hash = "h"

    def __init__(self, every: float) -> None:
        self.every = every
        self.due = time.monotonic() + every
        self.asked = 0
        self.beats = 0

    def after(self) -> int | None:
        return None

    def offer(self, message: dict[str, Any] | None) -> None:
        pass

    def end_session(self) -> None:
        pass

    def heartbeat(self, now: float) -> float:
        self.asked += 1
        if now >= self.due:
            self.due = now + self.every
            self.beats += 1
        return self.due


def test_burstpath_a_heartbeat_tick_asks_only_the_listeners_that_are_due():
    hub = Hub(lambda hashes: hashes)
    idle = [_Beating(3600) for _ in range(2000)]
    soon = [_Beating(0.05) for _ in range(10)]
    for uid, listener in enumerate(idle + soon):
        assert hub.try_register(uid, listener, 5)
    hub.heartbeat()  # the first tick asks everyone once (each says when it is due)
    for listener in idle + soon:
        listener.asked = 0
    deadline = time.monotonic() + 30
    while min(listener.beats for listener in soon) < 3 and time.monotonic() < deadline:
        hub.heartbeat()
        time.sleep(0.01)
    assert min(listener.beats for listener in soon) >= 3  # every due heartbeat was sent
    assert sum(listener.asked for listener in idle) == 0  # ... without looking at the 2,000 not due
    # A listener that is gone is not asked again.
    gone = soon[0]
    hub.unregister(len(idle), gone)
    asked = gone.asked
    time.sleep(0.1)
    hub.heartbeat()
    assert gone.asked == asked


def test_burstpath_hints_and_wake_go_out_in_one_round_trip_hint_first():
    require_redis(REDIS_URL)
    message = {"id": 5, "prevId": None, "type": "customer_assigned", "title": "新线索", "body": "", "data": {}}

    async def scenario() -> tuple[list[Any], list[Any], int]:
        sender, receiver = bus_pair()
        heard: list[Any] = []
        own: list[Any] = []
        receiver.on_inapp(lambda uid, m: heard.append((uid, m)))
        receiver.on_wake(lambda: heard.append("wake"))
        sender.on_wake(lambda: own.append("wake"))
        commands = 0
        async with running(sender, receiver):
            heard.clear()  # the wake-ups of the connects
            own.clear()
            real = sender._redis.connection_pool.get_connection

            async def counted(*args: Any, **kwargs: Any) -> Any:
                nonlocal commands
                commands += 1  # a connection taken from the pool: one round trip (a pipeline is one)
                return await real(*args, **kwargs)

            sender._redis.connection_pool.get_connection = counted  # type: ignore[method-assign]
            await sender.publish_hints_and_wake({1, 2}, [(1, message)])
            await until(lambda: "wake" in heard)
        return heard, own, commands

    heard, own, commands = asyncio.run(scenario())
    assert heard == [(1, message), (2, None), "wake"]  # the hint first, the wake-up after it
    assert own == ["wake"]  # this process's own worker is woken directly
    assert commands == 1
