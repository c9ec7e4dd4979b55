"""A WebSocket client that dies without a goodbye (no close frame, no pong) is dropped by the server."""

from __future__ import annotations

import base64
import os
import re
import socket
import time

import httpx
import pytest
from support.procs import LeadpushProcess

from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.migrate import upgrade
from leadpush.users.service import create_user

pytestmark = pytest.mark.slow  # a `leadpush serve` subprocess waits out the ping timeout


def connected_clients(url: str) -> int:
    text = httpx.get(url + "/metrics", timeout=5).text
    return int(float(re.search(r"^leadpush_websocket_clients (\S+)$", text, re.M).group(1)))


def test_a_silent_client_is_dropped_after_the_ping_timeout(tmp_path):
    db_url = f"sqlite:///{tmp_path}/hb.db"
    upgrade(db_url)
    ctx = AppContext.from_settings(Settings(database_url=db_url))
    with ctx.db.write() as s:
        _, token = create_user(s, name="李丽", role="sales", team="A", create_missing_team=True)
    ctx.db.dispose()
    node = LeadpushProcess(
        {"LEADPUSH_DATABASE_URL": db_url, "LEADPUSH_WS_PING_INTERVAL": "0.5", "LEADPUSH_WS_PING_TIMEOUT": "0.5"},
        (),
        tmp_path,
        "heartbeat",
    ).start()
    try:
        # A raw handshake, then silence: this client will never answer a ping (like a phone gone dark).
        sock = socket.create_connection(("127.0.0.1", node.port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        assert b"101" in sock.recv(1024).split(b"\r\n", 1)[0]
        deadline = time.monotonic() + 30
        while connected_clients(node.url) != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert connected_clients(node.url) == 1
        deadline = time.monotonic() + 10
        while connected_clients(node.url) != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert connected_clients(node.url) == 0
        sock.close()
    finally:
        node.stop()
