"""What the fake platform accepts: constants, errmsg texts and the value rules of WeChat / WeCom.

Pure functions, no state: the routes in `platform.py` apply them, tests call them directly.
"""

from __future__ import annotations

import re
import secrets
import string
import unicodedata
from datetime import date
from typing import Any

TOKEN_TTL = 7200
STABLE_ROTATE_BEFORE = 300  # the platform rotates a stable token 5 minutes before expiry

# Limits of the access-token endpoints (the defaults of FakeWeChatState; each is configurable, None = off).
# getStableAccessToken (developers.weixin.qq.com/miniprogram/dev/OpenApiDoc/mp-access-token/
# getStableAccessToken.html, "注意事项" and its errcode table): 10,000 calls a minute and 500,000 a day;
# force_refresh "每天限用20次且需间隔30秒". Its errcodes: 45009 "reach max api daily quota limit"
# (a day's quota) and 45011 "api minute-quota reach limit mustslower retry next minute" (too frequent),
# so a force_refresh past the 20th of the day answers 45009 and one within 30 s of the last 45011.
# getAccessToken (GET /cgi-bin/token): each call issues a new token, the previous one keeps working
# for about 5 minutes and then is "invalid or not latest" (40001); about 2,000 calls a day (45009).
LEGACY_TOKEN_GRACE = 300
LEGACY_TOKEN_DAILY = 2000
STABLE_TOKEN_PER_MINUTE = 10_000
STABLE_TOKEN_DAILY = 500_000
FORCE_REFRESH_DAILY = 20
FORCE_REFRESH_INTERVAL = 30
QUOTA_DAILY = 45009  # errcode: a day's quota is used up (until the platform's day rolls over)
QUOTA_MINUTE = 45011  # errcode: too frequent
# WeChat's days (its daily quotas) run in Beijing time: the day rolls over at midnight UTC+8.
PLATFORM_UTC_OFFSET = 8 * 3600

WECOM_PER_MINUTE = 30  # messages a minute per member per app (beyond: dropped silently, errcode 0)
WECOM_PER_HOUR = 1000
WECOM_DUPLICATE_INTERVAL = 1800  # enable_duplicate_check: the default duplicate_check_interval (s)
WECOM_DUPLICATE_MAX = 4 * 3600  # and its maximum
WECOM_CODE_TTL = 300  # a WeCom sign-in code is single-use and expires 5 minutes after it is issued

SUBSCRIBE_PATH = "/cgi-bin/message/subscribe/send"
WECOM_SEND_PATH = "/cgi-bin/message/send"

# slow: wait, then handle the request; late: handle it (the platform acts on it), then answer late.
FAULT_KINDS = frozenset({"errcode", "http", "slow", "late", "drop"})
MESSAGE_KINDS = ("subscribe", "wecom")
WECOM_MSGTYPES = frozenset({"text", "textcard", "markdown", "template_card"})

ERRMSG: dict[int, str] = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40008: "invalid message type",
    40013: "invalid appid",
    40014: "invalid access_token",
    40029: "invalid code",
    40031: "invalid user list",
    40033: "invalid charset. please check your request, if include \\uxxxx will create fail!",
    40037: "invalid template_id",
    40056: "invalid agentid",
    40125: "invalid appsecret",
    41002: "appid missing",
    41004: "appsecret missing",
    41008: "missing code",
    41030: "invalid page",
    42001: "access_token expired",
    43101: "user refuse to accept the msg",
    44004: "empty content",
    45002: "content size out of limit",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit  mustslower  retry next minute",
    47001: "data format error",
    47003: "argument invalid!",
    50001: "redirect_uri not authorized",
    81013: "user & party & tag all invalid",
}


def rid() -> str:
    return f"{secrets.token_hex(4)}-{secrets.token_hex(4)}-{secrets.token_hex(4)}"


def errmsg(code: int, detail: str | None = None) -> str:
    base = detail if detail is not None else ERRMSG.get(code, "fake error")
    return f"{base} rid: {rid()}"


# --------------------------------------------------------------------------------------
# Data value type rules (subscribe messages)
# --------------------------------------------------------------------------------------

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_RE_CJK_NAME = re.compile(f"^[{_CJK}·]{{1,10}}$")
_RE_PHRASE = re.compile(f"^[{_CJK}]{{1,5}}$")
_ASCII_SYMBOLS = set(string.punctuation)
_ASCII_LETTERS = set(string.ascii_letters)
_ASCII_DIGITS = set(string.digits)
_RE_NUMBER = re.compile(r"^[0-9]+(?:\.[0-9]+)?$")
_RE_LETTER = re.compile(r"^[A-Za-z]{1,32}$")
_RE_AMOUNT = re.compile(r"^[¥￥$€£]?([0-9]+)(?:\.([0-9]+))?元?$")
# "at most 17 digits or symbols": masked numbers such as 138****8000 and extensions with # pass.
_RE_PHONE = re.compile(r"^[0-9+\-()*#]{1,17}$")
_HHMM = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]"
_DATE = (
    r"(?:(?P<y1>[0-9]{4})-(?P<m1>[0-9]{2})-(?P<d1>[0-9]{2})"
    r"|(?P<y2>[0-9]{4})年(?P<m2>[0-9]{1,2})月(?P<d2>[0-9]{1,2})日)"
)
_RE_TIME = re.compile(f"^(?:{_DATE} )?{_HHMM}$")
_RE_DATE = re.compile(f"^{_DATE}(?: {_HHMM})?$")
_RE_KEY = re.compile(r"^([A-Za-z_]+?)[0-9]*$")


def _valid_date(m: re.Match[str]) -> bool:
    y = m.group("y1") or m.group("y2")
    if y is None:
        return True
    mo = m.group("m1") or m.group("m2")
    d = m.group("d1") or m.group("d2")
    try:
        date(int(y), int(mo), int(d))
    except ValueError:
        return False
    return True


def _is_symbol(c: str) -> bool:
    return unicodedata.category(c)[0] in "PS"


def check_data_value(kind: str, value: Any) -> bool:
    """True when ``value`` satisfies the platform rule for the data type ``kind``."""
    if not isinstance(value, str) or not value.strip():
        return False
    n = len(value)
    if kind == "thing":
        return n <= 20
    if kind == "number":
        return n <= 32 and _RE_NUMBER.match(value) is not None
    if kind == "letter":
        return _RE_LETTER.match(value) is not None
    if kind == "symbol":
        return n <= 5 and all(_is_symbol(c) for c in value)
    if kind == "character_string":
        ok = _ASCII_LETTERS | _ASCII_DIGITS | _ASCII_SYMBOLS
        return n <= 32 and all(c in ok for c in value)
    if kind == "time":
        m = _RE_TIME.match(value)
        return m is not None and _valid_date(m)
    if kind == "date":
        m = _RE_DATE.match(value)
        return m is not None and _valid_date(m)
    if kind == "amount":
        m = _RE_AMOUNT.match(value)
        if m is None:
            return False
        digits = len(m.group(1)) + len(m.group(2) or "")
        return digits <= 10
    if kind == "phone_number":
        return _RE_PHONE.match(value) is not None and any(c.isdigit() for c in value)
    if kind == "car_number":
        return n <= 8 and not any(c.isspace() for c in value)
    if kind == "name":
        if _RE_CJK_NAME.match(value):
            return True
        ok = _ASCII_LETTERS | _ASCII_SYMBOLS | {" "}
        return n <= 20 and all(c in ok for c in value)
    if kind == "phrase":
        return _RE_PHRASE.match(value) is not None
    return False  # unknown data type


def data_type_of(key: str) -> str:
    """``thing12`` -> ``thing``; ``character_string3`` -> ``character_string``."""
    m = _RE_KEY.match(key)
    return m.group(1) if m else key


# Raw JSON bytes containing a ``\\uXXXX`` escape (an odd run of backslashes) for a code point >= 0x80.
_RE_U_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u([0-9a-fA-F]{4})")


def has_non_ascii_u_escape(raw: bytes) -> bool:
    if b"\\u" not in raw:
        return False
    return any(int(m.group(1), 16) >= 0x80 for m in _RE_U_ESCAPE.finditer(raw))


def utf8_len(value: Any) -> int:
    return len(value.encode("utf-8")) if isinstance(value, str) else 0


def check_wecom_content(msgtype: str, body: dict[str, Any]) -> int:
    """0, 44004 (missing/empty content) or 45002 (content size out of limit)."""
    part = body.get(msgtype)
    if not isinstance(part, dict):
        return 44004
    if msgtype in ("text", "markdown"):
        content = part.get("content")
        if not isinstance(content, str) or not content:
            return 44004
        return 45002 if utf8_len(content) > 2048 else 0
    if msgtype == "textcard":
        title, desc, url = part.get("title"), part.get("description"), part.get("url")
        for value in (title, desc, url):
            if not isinstance(value, str) or not value:
                return 44004
        if utf8_len(title) > 128 or utf8_len(desc) > 512:
            return 45002
        btntxt = part.get("btntxt")
        if btntxt is not None and (not isinstance(btntxt, str) or len(btntxt) > 4):
            return 45002
        return 0
    # template_card: only the card type is checked
    return 0 if isinstance(part.get("card_type"), str) and part["card_type"] else 44004
