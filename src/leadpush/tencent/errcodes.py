"""The errcodes WeChat and WeCom share, and the retryable tail: one place for both platforms.

Each channel first sorts out the errcodes that are its own and permanent (a bad openid, a bad agentid,
content refused); whatever is left is decided here, and every answer left over is retried.
"""

from __future__ import annotations

import re

from leadpush.notify.channels.base import SendResult

BUSY = -1  # "system busy": always worth another try
# The access token is invalid or expired: fetch another past the shared copy and call once more.
TOKEN_ERRORS = frozenset({40001, 40014, 42001})
# A token endpoint's answers that pass by themselves (busy, rate or quota limits); any other is a
# configuration problem (bad appid / corpid / secret) that no retry fixes.
TRANSIENT_TOKEN_ERRORS = frozenset({BUSY, 45009, 45011})


def short_errmsg(errmsg: str) -> str:
    """The platform's message without its request id / hint suffix."""
    return re.split(r"\s+(?:rid:|hint:)", errmsg, maxsplit=1)[0].strip()[:120]


def retry_for(platform: str, code: int | None, errmsg: str) -> SendResult:
    """What is left once a channel has sorted out its permanent errcodes: every other answer retries."""
    if code in TOKEN_ERRORS:
        return SendResult.retry(f"access_token 无效（{code}），刷新后仍失败", errcode=code)
    if code == BUSY:
        return SendResult.retry(f"{platform}系统繁忙（-1）", errcode=code)
    return SendResult.retry(f"{platform}返回 errcode {code}：{short_errmsg(errmsg)}", errcode=code)
