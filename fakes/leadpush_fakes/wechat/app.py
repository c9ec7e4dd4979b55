"""The fake WeChat / WeCom server: one app per state, its routers, and the `leadpush-fake-wechat` command."""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI

from leadpush_fakes.wechat import control, miniprogram, tokens, wecom, wecomlogin
from leadpush_fakes.wechat.faults import FakeWeChatApp
from leadpush_fakes.wechat.state import FakeWeChatState


def create_app(state: FakeWeChatState | None = None) -> FastAPI:
    """A new fake WeChat/WeCom app with its own state (``app.state.fake``)."""
    st = state if state is not None else FakeWeChatState()
    app = FakeWeChatApp(title="fake wechat", docs_url=None, redoc_url=None, openapi_url=None)
    app.fake_state = st
    app.state.fake = st
    for module in (tokens, miniprogram, wecom, wecomlogin, control):
        app.include_router(module.router)
    return app


def run(host: str = "127.0.0.1", port: int = 9100) -> None:
    """Serve a fresh fake on ``host:port`` until interrupted."""
    uvicorn.run(create_app(), host=host, port=port, log_level="info")


def main(argv: list[str] | None = None) -> None:
    """``leadpush-fake-wechat [--host H] [--port P]``."""
    parser = argparse.ArgumentParser(
        prog="leadpush-fake-wechat", description="A fake WeChat / WeCom API server for tests, demos and benchmarks."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9100, help="port to listen on (default 9100)")
    args = parser.parse_args(argv)
    run(host=args.host, port=args.port)
