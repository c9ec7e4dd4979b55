"""Keep secrets out of logs: tokens in URLs (ours and WeChat's) are scrubbed before any handler sees them."""

from __future__ import annotations

import logging
import re

_SECRET_PARAMS = re.compile(r"((?:access_token|token|secret|corpsecret|js_code|code|key)=)[^&\s\"']+", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9_\-\.]+", re.IGNORECASE)

# Libraries that log request lines or URLs: HTTP clients (WeChat calls carry access_token) and the
# server (the WebSocket URL carries the user's token).
LOGGERS = ("httpx", "httpcore", "uvicorn.access", "uvicorn.error", "websockets.server", "websockets")


def redact(text: str) -> str:
    return _BEARER.sub(r"\1***", _SECRET_PARAMS.sub(r"\1***", text))


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(redact(a) if isinstance(a, str) else _maybe_url(a) for a in args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def _maybe_url(value: object) -> object:
    # httpx.URL and similar objects print their query string.
    if type(value).__name__ == "URL":
        return redact(str(value))
    return value


def install_log_redaction() -> None:
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
