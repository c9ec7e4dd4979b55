"""The fake WeChat / WeCom server on a real port for a test, and leadpush pointed at it.

A pytest plugin (registered in conftest.py): `fake_wechat` is a fresh fake per test; `fake` is one strict
fake per module (a module that needs another fake state overrides `fake`), `running` a leadpush on each
database talking to it, and `pushing` an `Api` on that leadpush with the fake and the tables emptied.

Usage::

    def test_something(fake_wechat: FakeWeChatServer) -> None:
        fake_wechat.state.add_credits("openid-1", "TPL", 1)
        httpx.post(f"{fake_wechat.url}/cgi-bin/stable_token", json={...})

    with FakeWeChatServer(FakeWeChatState(agentid=1000002)) as server:
        ...
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

import httpx
import pytest
import uvicorn
from leadpush_fakes.wechat import FakeWeChatState, create_app

from leadpush.context import AppContext
from leadpush.migrate import upgrade
from leadpush.notify.channels.base import Channel, DeliveryJob, SendResult
from support.api import Api
from support.databases import DATABASES, wipe
from support.servers import ServerThread, free_port, running_stack


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
            self.port = free_port(self.host)
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
    """LEADPUSH_* settings for both channels (and WeCom sign-in) against the fake."""
    settings: dict[str, object] = dict(
        wechat_appid=APPID,
        wechat_secret=SECRET,
        wechat_template_id=TEMPLATE,
        wechat_api_base=fake_url,
        wecom_corpid=CORPID,
        wecom_secret=CORPSECRET,
        wecom_agentid=AGENTID,
        wecom_api_base=fake_url,
        # WeCom sign-in: the browser goes to the fake's OAuth and QR login pages too.
        wecom_oauth_base=fake_url,
        wecom_login_base=fake_url,
        public_url=PUBLIC_URL,
        # Most tests count one message per notice; digests have their own tests, which set a window.
        digest_window_wechat=0,
        digest_window_wecom=0,
    )
    settings.update(overrides)
    return settings


@contextmanager
def leadpush_against(
    fake: FakeWeChatServer, kind: str, tmp_dir: str, **overrides: object
) -> Iterator[tuple[AppContext, ServerThread]]:
    """A running leadpush (api + worker + scheduler) on `kind` (sqlite | postgres) whose WeChat and
    WeCom channels talk to `fake`."""
    with running_stack(kind, tmp_dir, **channel_settings(fake.url, **overrides)) as stack:
        yield stack


def send(channel: Channel, *jobs: DeliveryJob) -> list[SendResult]:
    """Send the jobs concurrently through a channel (as the dispatcher would), then close it."""

    async def run() -> list[SendResult]:
        try:
            return list(await asyncio.gather(*(channel.send(j) for j in jobs)))
        finally:
            await channel.aclose()

    return asyncio.run(run())


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeWeChatServer]:
    """One fake per module that knows exactly leadpush's credentials (`fake.state.reset(full=True)` per test)."""
    with FakeWeChatServer(strict_state()) as server:
        yield server


@pytest.fixture(scope="module", params=DATABASES)
def running(
    request: pytest.FixtureRequest, fake: FakeWeChatServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AppContext, ServerThread]]:
    """A leadpush (api + worker + scheduler) per module and database whose channels talk to `fake`."""
    with leadpush_against(fake, request.param, str(tmp_path_factory.mktemp(request.param))) as stack:
        yield stack


@pytest.fixture
def pushing(running: tuple[AppContext, ServerThread], fake: FakeWeChatServer) -> Iterator[Api]:
    """`running` for one test: the fake and the tables emptied."""
    ctx, server = running
    fake.state.reset(full=True)
    wipe(ctx)
    api = Api(url=server.url, ctx=ctx)
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="module")
def channel_db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite file per module, for tests that drive a channel directly (no server)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('channel')}/channel.db"
    upgrade(url)
    return url
