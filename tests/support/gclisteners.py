"""Stand-ins for a socket's objects in the gc policy's tests: a listener the hub can hold, made of reference
cycles as a WsConnection is (its queue, lock and tasks), which only a full collection (or a thaw, once
frozen) frees."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Cycle:
    """A reference cycle: only a full collection (or a thaw, once frozen) frees it."""

    def __init__(self) -> None:
        self.me = self
        self.payload: dict[str, Any] = {"of": self}


class Connection:
    """A long-lived listener: ~2 objects per part besides itself (100 cycles: ~200 objects, as a socket holds)."""

    long_lived = True

    def __init__(self, user_id: int, parts: int = 100, part: Callable[[], object] = Cycle) -> None:
        self.user_id = user_id
        self.token_hash = "h"
        self.itself = self
        self.state: dict[str, Any] = {"owner": self, "buffer": [part() for _ in range(parts)]}

    def offer(self, message: dict[str, Any] | None) -> None:
        pass

    def end_session(self) -> None:
        pass

    def heartbeat(self, now: float) -> None:
        pass
