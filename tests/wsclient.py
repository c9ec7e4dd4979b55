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

    def notes(self) -> list[dict[str, Any]]:
        return [m for m in self.received if "id" in m]

    def close(self) -> None:
        try:
            self._cm.__exit__(None, None, None)
        except ConnectionClosed:
            pass
