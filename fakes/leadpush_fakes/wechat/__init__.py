"""A faithful fake of the WeChat / WeCom HTTP APIs that leadpush calls, for tests, demos and benchmarks.

It mimics the real platform (every answer is HTTP 200 with a JSON ``errcode``), keeps all of its
data in a :class:`FakeWeChatState` (one per app, thread-safe), and offers control endpoints under
``/_fake/`` plus the same operations as Python methods. Where things are: `rules.py` (what the
platform accepts), `state.py`, one router per API (`tokens.py`, `miniprogram.py`, `wecom.py`,
`wecomlogin.py` for WeCom sign-in, `control.py`), `faults.py` (injected faults), `app.py` (assembly and
the command).

It refuses what the platform refuses (issue 16): a legacy token dies 5 minutes after a newer one is issued
(40001), force_refresh at most 20 a day and 30 s apart (45009 / 45011), daily and per-minute quotas of
the token endpoints, and optionally a daily subscribe/send quota — every limit configurable (see
`FakeWeChatState` and `POST /_fake/config`), usage at `GET /_fake/quotas`.
"""

from leadpush_fakes.wechat.app import create_app, main, run
from leadpush_fakes.wechat.faults import ConnectionDropped
from leadpush_fakes.wechat.rules import SUBSCRIBE_PATH, WECOM_SEND_PATH, check_data_value, data_type_of
from leadpush_fakes.wechat.state import FakeWeChatState, Fault, PlatformRefusal, TokenRecord

__all__ = [
    "SUBSCRIBE_PATH",
    "WECOM_SEND_PATH",
    "ConnectionDropped",
    "FakeWeChatState",
    "Fault",
    "PlatformRefusal",
    "TokenRecord",
    "check_data_value",
    "create_app",
    "data_type_of",
    "main",
    "run",
]
