"""A small synchronous WebSocket client for tests (the `websockets` library's sync client)."""

from __future__ import annotations

import json
import time
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


class WsClient:
    def __init__(self, base_url: str, token: str, after: int | None = None, resume: int | None = None) -> None:
        url = base_url.replace("http://", "ws://") + f"/ws?token={token}"
        if after is not None:
            url += f"&after={after}"
        self._cm = connect(url, open_timeout=10)
        self.conn = self._cm.__enter__()
        self.received: list[dict[str, Any]] = []
        self.closed = False
        self.hello = self.next_of("hello", timeout=30)
        if resume is not None:
            self.send({"type": "resume", "after": resume})

    def send(self, payload: dict[str, Any]) -> None:
        self.conn.send(json.dumps(payload))

    def _recv(self, timeout: float) -> dict[str, Any] | None:
        if self.closed:
            time.sleep(min(timeout, 0.05))
            return None
        try:
            raw = self.conn.recv(timeout=timeout)
        except TimeoutError:
            return None
        except ConnectionClosed:
            self.closed = True
            return None
        message = json.loads(raw)
        self.received.append(message)
        return message

    def next_of(self, kind: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self._recv(max(0.01, deadline - time.monotonic()))
            if message is not None and message.get("type") == kind:
                return message
        raise AssertionError(f"no {kind!r} message within {timeout}s; got {self.received}")

    def notifications(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        """Wait until `count` notifications (messages with an id) arrived; return all of them.

        The default deadline is generous for a loaded machine: the wait ends as soon as they are there.
        """
        deadline = time.monotonic() + timeout
        while len(self.notes()) < count and time.monotonic() < deadline:
            self._recv(max(0.01, deadline - time.monotonic()))
        return self.notes()

    def drain(self, seconds: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._recv(max(0.01, deadline - time.monotonic()))
        return self.notes()

    def wait_closed(self, timeout: float = 30) -> int | None:
        """Read until the server closes the socket; its close code (None if still open at the deadline)."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self._recv(max(0.01, deadline - time.monotonic()))
        return close_code(self.conn) if self.closed else None

    def notes(self) -> list[dict[str, Any]]:
        return [m for m in self.received if "id" in m]

    def close(self) -> None:
        try:
            self._cm.__exit__(None, None, None)
        except ConnectionClosed:
            pass


def close_code(conn: Any) -> int | None:
    """The code of the close frame the server sent (None if it sent none)."""
    rcvd = conn.protocol.close_rcvd
    return rcvd.code if rcvd is not None else None


def refused_with(base_url: str, token: str, timeout: float = 30) -> int | None:
    """Open a socket that the server is expected to close before its hello; the close code."""
    url = base_url.replace("http://", "ws://") + f"/ws?token={token}"
    with connect(url, open_timeout=10) as conn:
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                message = json.loads(conn.recv(timeout=max(0.01, deadline - time.monotonic())))
                if message.get("type") == "hello":
                    return None  # accepted
        except (ConnectionClosed, TimeoutError):
            pass
        return close_code(conn)
