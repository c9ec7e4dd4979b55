"""Keep secrets out of logs: tokens in URLs (ours and WeChat's) are scrubbed before any handler sees them."""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

# Query keys whose values are secrets, compared with the key decoded and lower-cased (so `tok%65n=`
# and `TOKEN=`, which the server reads as `token`, are caught) and by suffix (`corpsecret`, `api_key`).
SECRET_KEYS = ("access_token", "token", "secret", "js_code", "code", "key")
_PARAM = re.compile(r"([A-Za-z0-9_.~%+\-]+)=([^&\s\"']+)")
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9_\-\.]+", re.IGNORECASE)

# Libraries that log request lines or URLs: HTTP clients (WeChat calls carry access_token) and the
# server (the WebSocket URL carries the user's token).
LOGGERS = ("httpx", "httpcore", "uvicorn.access", "uvicorn.error", "websockets.server", "websockets")


def _decoded_key(key: str) -> str:
    for _ in range(3):  # undo double encoding too (`%2574oken`): cheap, and errs on the safe side
        decoded = unquote_plus(key)
        if decoded == key:
            break
        key = decoded
    return key.lower()


def _scrub_param(match: re.Match[str]) -> str:
    if _decoded_key(match.group(1)).endswith(SECRET_KEYS):
        return f"{match.group(1)}=***"
    return match.group(0)


def redact(text: str) -> str:
    return _BEARER.sub(r"\1***", _PARAM.sub(_scrub_param, text))


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
