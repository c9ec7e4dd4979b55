"""Run the fake WeChat / WeCom server on a real port for a test.

Usage::

    from fakewechat_fixture import FakeWeChatServer, fake_wechat  # noqa: F401 (fixture)

    def test_something(fake_wechat: FakeWeChatServer) -> None:
        fake_wechat.state.add_credits("openid-1", "TPL", 1)
        httpx.post(f"{fake_wechat.url}/cgi-bin/stable_token", json={...})

    with FakeWeChatServer(FakeWeChatState(agentid=1000002)) as server:
        ...
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

import httpx
import pytest
import uvicorn
from support import ServerThread, database_url, start_stack

from leadpush.context import AppContext
from leadpush.fakewechat.server import FakeWeChatState, create_app
from leadpush.notify.channels.base import Channel, DeliveryJob, SendResult


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class FakeWeChatServer:
    """The fake served by uvicorn in a background thread; ``.url``, ``.state``, ``.app``."""

    def __init__(self, state: FakeWeChatState | None = None, host: str = "127.0.0.1") -> None:
        self.state = state if state is not None else FakeWeChatState()
        self.app = create_app(self.state)
        self.host = host
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> FakeWeChatServer:
        last_error = "did not start"
        for _attempt in range(5):  # a picked port can be taken before uvicorn binds it
            self.port = _free_port(self.host)
            config = uvicorn.Config(
                self.app,
                host=self.host,
                port=self.port,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=1,
            )
            server = uvicorn.Server(config)
            thread = threading.Thread(target=server.run, name=f"fake-wechat-{self.port}", daemon=True)
            thread.start()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and thread.is_alive() and not server.started:
                time.sleep(0.01)
            if server.started and self._answers():
                self._server, self._thread = server, thread
                return self
            server.should_exit = True
            thread.join(timeout=5)
            last_error = f"uvicorn did not start on port {self.port}"
        raise RuntimeError(f"fake wechat server: {last_error}")

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/_fake/stats", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout=5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)

    def __enter__(self) -> FakeWeChatServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@pytest.fixture
def fake_wechat() -> Iterator[FakeWeChatServer]:
    """A fresh fake WeChat/WeCom server per test (accepts any appid/secret/openid/template)."""
    with FakeWeChatServer() as server:
        yield server


# --------------------------------------------------------------------------------------
# leadpush pointed at the fake
# --------------------------------------------------------------------------------------

APPID, SECRET, TEMPLATE = "wx-leadpush", "wx-secret", "TPL-lead-assigned"
CORPID, CORPSECRET, AGENTID = "ww-leadpush", "ww-secret", 1000002
PUBLIC_URL = "https://crm.example.com"


def strict_state(**overrides: object) -> FakeWeChatState:
    """A fake that knows exactly leadpush's credentials, template and agent (anything else is an error)."""
    config: dict[str, object] = dict(
        appid=APPID,
        secret=SECRET,
        corpid=CORPID,
        corpsecret=CORPSECRET,
        agentid=AGENTID,
        templates=[TEMPLATE],
    )
    config.update(overrides)
    return FakeWeChatState(**config)  # type: ignore[arg-type]


def channel_settings(fake_url: str, **overrides: object) -> dict[str, object]:
    """LEADPUSH_* settings for both channels against the fake."""
    settings: dict[str, object] = dict(
        wechat_appid=APPID,
        wechat_secret=SECRET,
        wechat_template_id=TEMPLATE,
        wechat_api_base=fake_url,
        wecom_corpid=CORPID,
        wecom_secret=CORPSECRET,
        wecom_agentid=AGENTID,
        wecom_api_base=fake_url,
        public_url=PUBLIC_URL,
    )
    settings.update(overrides)
    return settings


def wait_until(predicate: object, timeout: float = 10.0, interval: float = 0.02) -> object:
    """Poll until `predicate()` is truthy; returns its value (fails the test on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()  # type: ignore[operator]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)


@contextmanager
def leadpush_against(
    fake: FakeWeChatServer, kind: str, tmp_dir: str, **overrides: object
) -> Iterator[tuple[AppContext, ServerThread]]:
    """A running leadpush (api + worker + scheduler) on `kind` (sqlite | postgres) whose WeChat and
    WeCom channels talk to `fake`."""
    gen = database_url(kind, tmp_dir)
    url = next(gen)
    ctx, server = start_stack(url, **channel_settings(fake.url, **overrides))
    try:
        yield ctx, server
    finally:
        server.stop()
        ctx.db.dispose()
        gen.close()


def send(channel: Channel, *jobs: DeliveryJob) -> list[SendResult]:
    """Send the jobs concurrently through a channel (as the dispatcher would), then close it."""

    async def run() -> list[SendResult]:
        try:
            return list(await asyncio.gather(*(channel.send(j) for j in jobs)))
        finally:
            await channel.aclose()

    return asyncio.run(run())
