"""A real HTTP webhook receiver for tests: counts what arrives and fails on demand."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from support.servers import ServerThread


class WebhookReceiver:
    def __init__(self, delay: float = 0.0) -> None:
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.by_delivery: Counter[str] = Counter()
        self.fail_with: list[int] = []  # statuses to answer with, consumed one per request
        self.always: int | None = None
        self.retry_after: list[str] = []  # Retry-After headers to answer failures with, one per request
        self.delay = delay
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> JSONResponse:
            body = await request.body()
            if self.delay:
                await asyncio.sleep(self.delay)
            with self.lock:
                status = self.fail_with.pop(0) if self.fail_with else (self.always or 200)
                retry_after = self.retry_after.pop(0) if status >= 300 and self.retry_after else None
                self.requests.append(
                    {"headers": dict(request.headers), "body": body, "status": status, "retry_after": retry_after}
                )
                if status < 300:
                    self.by_delivery[request.headers.get("x-leadpush-delivery", "")] += 1
            headers = {"Retry-After": retry_after} if retry_after is not None else None
            return JSONResponse({"ok": status < 300}, status_code=status, headers=headers)

        self.server = ServerThread(app)
        self.url = self.server.url + "/hook"

    def __enter__(self) -> WebhookReceiver:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def accepted(self) -> int:
        with self.lock:
            return sum(self.by_delivery.values())
