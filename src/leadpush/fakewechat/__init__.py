"""A fake WeChat / WeCom server for tests, demos and benchmarks."""

from leadpush.fakewechat.server import FakeWeChatState, create_app, run

__all__ = ["FakeWeChatState", "create_app", "run"]
