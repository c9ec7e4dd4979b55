"""A faithful fake of the WeChat / WeCom HTTP APIs, for tests, demos and benchmarks.

It mimics the real platform (see docs: every answer is HTTP 200 with a JSON ``errcode``),
keeps all of its data in a :class:`FakeWeChatState` (one per app, thread-safe), and offers
control endpoints under ``/_fake/`` plus the same operations as Python methods.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import random
import re
import secrets
import string
import threading
import time
import unicodedata
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

__all__ = ["FakeWeChatState", "Fault", "TokenRecord", "create_app", "run"]

TOKEN_TTL = 7200
STABLE_ROTATE_BEFORE = 300  # the platform rotates a stable token 5 minutes before expiry

WECOM_PER_MINUTE = 30
WECOM_PER_HOUR = 1000
ROBOT_PER_MINUTE = 20

SUBSCRIBE_PATH = "/cgi-bin/message/subscribe/send"
WECOM_SEND_PATH = "/cgi-bin/message/send"
ROBOT_PATH = "/cgi-bin/webhook/send"

FAULT_KINDS = frozenset({"errcode", "http", "slow", "drop"})
MESSAGE_KINDS = ("subscribe", "wecom", "robot")
WECOM_MSGTYPES = frozenset({"text", "textcard", "markdown", "template_card"})
ROBOT_MSGTYPES = frozenset({"text", "markdown", "markdown_v2", "image", "news", "file", "template_card"})

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
    81013: "user & party & tag all invalid",
    93000: "invalid webhook url",
}

log = logging.getLogger(__name__)


def _rid() -> str:
    return f"{secrets.token_hex(4)}-{secrets.token_hex(4)}-{secrets.token_hex(4)}"


def _errmsg(code: int, detail: str | None = None) -> str:
    base = detail if detail is not None else ERRMSG.get(code, "fake error")
    return f"{base} rid: {_rid()}"


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


# --------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------


@dataclass
class TokenRecord:
    token: str
    namespace: str  # "wechat" | "wecom"
    endpoint: str  # "stable_token" | "token" | "gettoken"
    owner: str  # appid or corpid
    issued_at: float
    expires_at: float
    status: str = "valid"  # "valid" | "expired" | "revoked"


@dataclass
class Fault:
    id: int
    path: str
    kind: str
    errcode: int = -1
    errmsg: str | None = None
    status: int = 502
    delay: float = 1.0
    count: int | None = None
    rate: float | None = None
    seed: int | None = None
    fired: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "kind": self.kind,
            "errcode": self.errcode,
            "errmsg": self.errmsg,
            "status": self.status,
            "delay": self.delay,
            "count": self.count,
            "rate": self.rate,
            "seed": self.seed,
            "fired": self.fired,
        }


class FakeWeChatState:
    """Everything the fake knows. All public methods take the lock; safe across threads.

    Configuration fields (plain attributes, set them directly or via the constructor):
    ``appid``/``secret``/``corpid``/``corpsecret``/``agentid`` (None = accept any),
    ``accept_any_openid``, ``known_openids``, ``templates``, ``accept_any_template``,
    ``long_term_templates``, ``allowed_pages``, ``wecom_users``, ``robot_keys``,
    ``token_ttl``, ``clock``.
    """

    def __init__(
        self,
        *,
        appid: str | None = None,
        secret: str | None = None,
        corpid: str | None = None,
        corpsecret: str | None = None,
        agentid: int | None = None,
        accept_any_openid: bool = True,
        known_openids: Iterable[str] = (),
        templates: Iterable[str] | None = None,
        accept_any_template: bool | None = None,
        long_term_templates: Iterable[str] = (),
        allowed_pages: Iterable[str] = ("pages/",),
        wecom_users: Iterable[str] = (),
        robot_keys: Iterable[str] = (),
        token_ttl: int = TOKEN_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lock = threading.RLock()
        self.clock: Callable[[], float] = clock
        self.time_offset = 0.0
        self._initial: dict[str, Any] = {}
        self.appid = appid
        self.secret = secret
        self.corpid = corpid
        self.corpsecret = corpsecret
        self.agentid = agentid
        self.accept_any_openid = accept_any_openid
        self.known_openids: set[str] = set(known_openids)
        self.templates: set[str] = set(templates or ())
        # Without an explicit template list every non-empty template id is accepted.
        self.accept_any_template = (templates is None) if accept_any_template is None else accept_any_template
        self.long_term_templates: set[str] = set(long_term_templates)
        self.allowed_pages: list[str] = list(allowed_pages)
        self.wecom_users: set[str] = {u.lower() for u in wecom_users}
        self.robot_keys: set[str] = set(robot_keys)
        self.token_ttl = token_ttl
        self._initial = self._config_snapshot()
        self._init_runtime()

    _CONFIG_SNAPSHOT_FIELDS = (
        "appid",
        "secret",
        "corpid",
        "corpsecret",
        "agentid",
        "accept_any_openid",
        "known_openids",
        "templates",
        "accept_any_template",
        "long_term_templates",
        "allowed_pages",
        "wecom_users",
        "robot_keys",
        "token_ttl",
    )

    def _config_snapshot(self) -> dict[str, Any]:
        return {name: copy.copy(getattr(self, name)) for name in self._CONFIG_SNAPSHOT_FIELDS}

    def _init_runtime(self) -> None:
        self.tokens: dict[str, TokenRecord] = {}
        self._stable_current: dict[str, str] = {}  # appid -> token
        self._wecom_current: dict[tuple[str, str], str] = {}  # (corpid, corpsecret) -> token
        self.credits: dict[tuple[str, str], int] = {}
        self.codes: dict[str, tuple[str, str | None]] = {}  # js_code -> (openid, unionid)
        self.used_codes: set[str] = set()
        self.messages: dict[str, list[dict[str, Any]]] = {k: [] for k in MESSAGE_KINDS}
        self.faults: list[Fault] = []
        self._fault_seq = 0
        self.token_requests: Counter[str] = Counter()
        self.tokens_issued: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.rejected: Counter[int] = Counter()
        self.rejected_by_kind: dict[str, Counter[int]] = {}
        self.faults_fired: Counter[str] = Counter()
        self.wecom_dropped: Counter[str] = Counter()
        self._wecom_windows: dict[tuple[int, str], deque[float]] = {}
        self._robot_windows: dict[str, deque[float]] = {}
        self._msgid = 10**18 + random.getrandbits(59)
        self._seq = 0

    # ---- time -----------------------------------------------------------------------

    def now(self) -> float:
        return self.clock() + self.time_offset

    def advance(self, seconds: float) -> float:
        """Move the fake's notion of time forward (on top of ``clock``)."""
        with self.lock:
            self.time_offset += seconds
            return self.now()

    # ---- configuration helpers -------------------------------------------------------

    def register_openid(self, *openids: str) -> None:
        with self.lock:
            self.known_openids.update(openids)

    def register_template(self, *template_ids: str, long_term: bool = False) -> None:
        with self.lock:
            self.templates.update(template_ids)
            if long_term:
                self.long_term_templates.update(template_ids)

    def register_code(self, code: str, openid: str, unionid: str | None = None) -> None:
        with self.lock:
            self.codes[code] = (openid, unionid)
            self.used_codes.discard(code)

    def add_wecom_users(self, *users: str, replace: bool = False) -> set[str]:
        with self.lock:
            if replace:
                self.wecom_users = set()
            self.wecom_users.update(u.lower() for u in users)
            return set(self.wecom_users)

    def add_robot_keys(self, *keys: str) -> None:
        with self.lock:
            self.robot_keys.update(keys)

    # ---- credits ---------------------------------------------------------------------

    def add_credits(self, openid: str, template_id: str, count: int = 1) -> int:
        """Add (or with a negative count, remove) subscribe credits; returns the new balance."""
        with self.lock:
            key = (openid, template_id)
            self.credits[key] = max(0, self.credits.get(key, 0) + int(count))
            return self.credits[key]

    def set_credits(self, openid: str, template_id: str, count: int) -> int:
        with self.lock:
            self.credits[(openid, template_id)] = max(0, int(count))
            return self.credits[(openid, template_id)]

    def get_credits(self, openid: str, template_id: str) -> int:
        with self.lock:
            return self.credits.get((openid, template_id), 0)

    # ---- tokens ----------------------------------------------------------------------

    def _new_token(self, namespace: str, endpoint: str, owner: str) -> TokenRecord:
        now = self.now()
        prefix = "wx" if namespace == "wechat" else "wc"
        rec = TokenRecord(
            token=f"{prefix}_{secrets.token_urlsafe(48)}",
            namespace=namespace,
            endpoint=endpoint,
            owner=owner,
            issued_at=now,
            expires_at=now + self.token_ttl,
        )
        self.tokens[rec.token] = rec
        self.tokens_issued[endpoint] += 1
        return rec

    def _usable(self, rec: TokenRecord | None, now: float) -> bool:
        return rec is not None and rec.status == "valid" and now < rec.expires_at

    def issue_stable_token(self, appid: str, force_refresh: bool = False) -> tuple[str, int]:
        with self.lock:
            now = self.now()
            current = self.tokens.get(self._stable_current.get(appid, ""))
            if force_refresh and current is not None:
                current.status = "revoked"  # force_refresh invalidates the old token at once
            if force_refresh or not self._usable(current, now) or current.expires_at - now <= STABLE_ROTATE_BEFORE:
                # On normal rotation the previous token stays valid until its own expiry (overlap).
                current = self._new_token("wechat", "stable_token", appid)
                self._stable_current[appid] = current.token
            assert current is not None
            return current.token, max(1, int(current.expires_at - now))

    def issue_legacy_token(self, appid: str) -> tuple[str, int]:
        with self.lock:
            rec = self._new_token("wechat", "token", appid)
            return rec.token, self.token_ttl

    def issue_wecom_token(self, corpid: str, corpsecret: str) -> tuple[str, int]:
        with self.lock:
            now = self.now()
            key = (corpid, corpsecret)
            current = self.tokens.get(self._wecom_current.get(key, ""))
            if not self._usable(current, now):
                current = self._new_token("wecom", "gettoken", corpid)
                self._wecom_current[key] = current.token
            assert current is not None
            return current.token, max(1, int(current.expires_at - now))

    def check_token(self, token: str | None, namespace: str) -> int:
        """0 if ``token`` is usable in ``namespace``, else the platform errcode."""
        if token is None:
            return 40001
        if not token or any(c.isspace() or not c.isprintable() for c in token):
            return 40014
        with self.lock:
            rec = self.tokens.get(token)
            if rec is None or rec.namespace != namespace or rec.status == "revoked":
                return 40001
            if rec.status == "expired" or self.now() >= rec.expires_at:
                return 42001
            return 0

    def _mark_tokens(self, status: str, token: str | None) -> int:
        with self.lock:
            targets = [self.tokens[token]] if token in self.tokens else [] if token else list(self.tokens.values())
            n = 0
            for rec in targets:
                if rec.status == "valid" or (status == "revoked" and rec.status != "revoked"):
                    rec.status = status
                    n += 1
            return n

    def expire_tokens(self, token: str | None = None) -> int:
        """Mark one token (or all) expired: later calls get 42001. Returns how many changed."""
        return self._mark_tokens("expired", token)

    def revoke_tokens(self, token: str | None = None) -> int:
        """Mark one token (or all) invalid: later calls get 40001. Returns how many changed."""
        return self._mark_tokens("revoked", token)

    def list_tokens(self) -> list[dict[str, Any]]:
        with self.lock:
            now = self.now()
            return [
                {
                    "token": r.token,
                    "namespace": r.namespace,
                    "endpoint": r.endpoint,
                    "owner": r.owner,
                    "status": r.status if r.status != "valid" or now < r.expires_at else "expired",
                    "expiresIn": max(0, int(r.expires_at - now)),
                }
                for r in self.tokens.values()
            ]

    # ---- faults ----------------------------------------------------------------------

    def add_fault(
        self,
        path: str = "*",
        kind: str = "errcode",
        *,
        errcode: int = -1,
        errmsg: str | None = None,
        status: int = 502,
        delay: float = 1.0,
        count: int | None = None,
        rate: float | None = None,
        seed: int | None = None,
    ) -> Fault:
        """Inject a fault for ``path`` (exact request path, or "*" for every platform endpoint).

        ``count``: fire on the next N matching requests; ``rate``: fire with that probability
        (``seed`` makes it reproducible); neither: fire on every matching request until cleared.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if count is not None and int(count) < 1:
            raise ValueError("count must be >= 1")
        if rate is not None and not 0.0 <= float(rate) <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        with self.lock:
            self._fault_seq += 1
            fault = Fault(
                id=self._fault_seq,
                path=path,
                kind=kind,
                errcode=int(errcode),
                errmsg=errmsg,
                status=int(status),
                delay=float(delay),
                count=None if count is None else int(count),
                rate=None if rate is None else float(rate),
                seed=seed,
                rng=random.Random(seed),
            )
            self.faults.append(fault)
            return fault

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def pick_fault(self, path: str) -> Fault | None:
        """The fault that fires for this request, if any (consumes counts / draws rates)."""
        if not self.faults:
            return None
        with self.lock:
            for fault in list(self.faults):
                if fault.path != "*" and fault.path != path:
                    continue
                if fault.rate is not None and fault.rng.random() >= fault.rate:
                    continue
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                fault.fired += 1
                self.faults_fired[fault.kind] += 1
                return fault
            return None

    # ---- bookkeeping -----------------------------------------------------------------

    def next_msgid(self) -> int:
        with self.lock:
            self._msgid += 1
            return self._msgid

    def count_token_request(self, endpoint: str) -> None:
        with self.lock:
            self.token_requests[endpoint] += 1

    def record_reject(self, kind: str, errcode: int) -> None:
        with self.lock:
            self.rejected[errcode] += 1
            self.rejected_by_kind.setdefault(kind, Counter())[errcode] += 1

    def get_messages(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Accepted messages (newest last), of one kind or all kinds ordered by arrival."""
        with self.lock:
            if kind is not None:
                return list(self.messages.get(kind, []))
            out = [m for k in MESSAGE_KINDS for m in self.messages[k]]
        out.sort(key=lambda m: m["seq"])
        return out

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "token_requests": dict(self.token_requests),
                "tokens_issued": dict(self.tokens_issued),
                "accepted": dict(self.accepted),
                "rejected": dict(self.rejected),
                "rejected_by_kind": {k: dict(v) for k, v in self.rejected_by_kind.items()},
                "wecom_dropped": dict(self.wecom_dropped),
                "faults_fired": dict(self.faults_fired),
                "messages": {k: len(v) for k, v in self.messages.items()},
            }

    def reset(self, full: bool = False) -> None:
        """Forget tokens, credits, codes, messages, counters, faults and rate windows.

        Configuration (credentials, known openids/templates/users/keys, pages) is kept
        unless ``full`` is true, which restores the constructor's configuration too.
        ``clock`` is kept; the ``advance`` offset goes back to 0.
        """
        with self.lock:
            if full:
                for name, value in self._initial.items():
                    setattr(self, name, copy.copy(value))
            self.time_offset = 0.0
            self._init_runtime()

    # ---- message handling (called by the app; each takes the lock once) -------------

    def _append_message(self, kind: str, record: dict[str, Any]) -> None:
        self._seq += 1
        record["seq"] = self._seq
        self.messages[kind].append(record)
        self.accepted[kind] += 1

    def openid_ok(self, openid: Any) -> bool:
        if not isinstance(openid, str) or not openid:
            return False
        with self.lock:
            if openid in self.known_openids:
                return True
            return self.accept_any_openid and not openid.startswith("oOA")

    def template_ok(self, template_id: Any) -> bool:
        if not isinstance(template_id, str) or not template_id:
            return False
        with self.lock:
            return template_id in self.templates or self.accept_any_template

    def page_ok(self, page: Any) -> bool:
        if page is None or page == "":
            return True
        if not isinstance(page, str):
            return False
        with self.lock:
            return any(page.startswith(p) for p in self.allowed_pages)

    def consume_subscribe(self, openid: str, template_id: str, body: dict[str, Any]) -> int | None:
        """Spend a credit and record the message; returns the msgid, or None for 43101."""
        with self.lock:
            if template_id not in self.long_term_templates:
                key = (openid, template_id)
                left = self.credits.get(key, 0)
                if left <= 0:
                    return None
                self.credits[key] = left - 1
            self._msgid += 1
            msgid = self._msgid
            self._append_message(
                "subscribe",
                {
                    "kind": "subscribe",
                    "msgid": msgid,
                    "openid": openid,
                    "templateId": template_id,
                    "page": body.get("page"),
                    "body": body,
                    "receivedAt": self.now(),
                },
            )
            return msgid

    def wecom_user_known(self, user: str) -> bool:
        with self.lock:
            return not self.wecom_users or user in self.wecom_users

    def deliver_wecom(
        self, agentid: int, users: list[str], invalid: list[str], body: dict[str, Any]
    ) -> tuple[str, list[str], list[str]]:
        """Apply per-member pacing; returns (msgid, delivered, dropped)."""
        with self.lock:
            now = self.now()
            delivered: list[str] = []
            dropped: list[str] = []
            for user in users:
                window = self._wecom_windows.setdefault((agentid, user), deque())
                while window and window[0] <= now - 3600:
                    window.popleft()
                last_minute = 0
                for t in reversed(window):
                    if t <= now - 60:
                        break
                    last_minute += 1
                    if last_minute >= WECOM_PER_MINUTE:
                        break
                if last_minute >= WECOM_PER_MINUTE or len(window) >= WECOM_PER_HOUR:
                    dropped.append(user)
                    self.wecom_dropped[user] += 1
                else:
                    window.append(now)
                    delivered.append(user)
            msgid = secrets.token_urlsafe(24)
            if delivered:
                self._append_message(
                    "wecom",
                    {
                        "kind": "wecom",
                        "msgid": msgid,
                        "agentid": agentid,
                        "msgtype": body.get("msgtype"),
                        "touser": delivered,
                        "dropped": dropped,
                        "invaliduser": invalid,
                        "body": body,
                        "receivedAt": now,
                    },
                )
            else:
                self.accepted["wecom_all_dropped"] += 1
            return msgid, delivered, dropped

    def robot_key_ok(self, key: str | None) -> bool:
        if not key:
            return False
        with self.lock:
            if self.robot_keys:
                return key in self.robot_keys
            return key != "bad"

    def deliver_robot(self, key: str, body: dict[str, Any]) -> bool:
        """Record a robot message; False when the robot is over 20 messages a minute."""
        with self.lock:
            now = self.now()
            window = self._robot_windows.setdefault(key, deque())
            while window and window[0] <= now - 60:
                window.popleft()
            if len(window) >= ROBOT_PER_MINUTE:
                return False
            window.append(now)
            self._append_message(
                "robot",
                {
                    "kind": "robot",
                    "key": key,
                    "msgtype": body.get("msgtype"),
                    "body": body,
                    "receivedAt": now,
                },
            )
            return True

    def login(self, code: str) -> tuple[str, str | None] | None:
        """Consume a js_code; returns (openid, unionid) or None (unknown or reused)."""
        with self.lock:
            if code in self.used_codes or code not in self.codes:
                return None
            self.used_codes.add(code)
            openid, unionid = self.codes.pop(code)
            self.known_openids.add(openid)
            self.accepted["jscode2session"] += 1
            return openid, unionid

    # ---- generic configuration ------------------------------------------------------

    CONFIG_FIELDS = (
        "appid",
        "secret",
        "corpid",
        "corpsecret",
        "agentid",
        "accept_any_openid",
        "accept_any_template",
        "allowed_pages",
        "token_ttl",
    )

    def configure(self, **values: Any) -> dict[str, Any]:
        with self.lock:
            for name, value in values.items():
                if name not in self.CONFIG_FIELDS:
                    raise ValueError(f"unknown config field {name!r}")
                if name == "allowed_pages":
                    value = list(value)
                setattr(self, name, value)
            return {name: getattr(self, name) for name in self.CONFIG_FIELDS}


# --------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------


def _wx(errcode: int, detail: str | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"errcode": errcode, "errmsg": _errmsg(errcode, detail), **extra})


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def _utf8_len(value: Any) -> int:
    return len(value.encode("utf-8")) if isinstance(value, str) else 0


def _check_wecom_content(msgtype: str, body: dict[str, Any]) -> int:
    """0, 44004 (missing/empty content) or 45002 (content size out of limit)."""
    part = body.get(msgtype)
    if not isinstance(part, dict):
        return 44004
    if msgtype in ("text", "markdown"):
        content = part.get("content")
        if not isinstance(content, str) or not content:
            return 44004
        return 45002 if _utf8_len(content) > 2048 else 0
    if msgtype == "textcard":
        title, desc, url = part.get("title"), part.get("description"), part.get("url")
        for value in (title, desc, url):
            if not isinstance(value, str) or not value:
                return 44004
        if _utf8_len(title) > 128 or _utf8_len(desc) > 512:
            return 45002
        btntxt = part.get("btntxt")
        if btntxt is not None and (not isinstance(btntxt, str) or len(btntxt) > 4):
            return 45002
        return 0
    # template_card: only the card type is checked
    return 0 if isinstance(part.get("card_type"), str) and part["card_type"] else 44004


def _check_robot_content(msgtype: str, body: dict[str, Any]) -> int:
    part = body.get(msgtype)
    if not isinstance(part, dict):
        return 44004
    if msgtype in ("text", "markdown", "markdown_v2"):
        content = part.get("content")
        if not isinstance(content, str) or not content:
            return 44004
        limit = 2048 if msgtype == "text" else 4096
        return 45002 if _utf8_len(content) > limit else 0
    return 0


class _FakeWeChatApp(FastAPI):
    """FastAPI app that applies injected faults at the raw ASGI level (before routing)."""

    fake_state: FakeWeChatState

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/_fake/"):
            fault = self.fake_state.pick_fault(scope["path"])
            if fault is not None:
                if fault.kind == "slow":
                    await asyncio.sleep(fault.delay)
                elif fault.kind == "drop":
                    await _drop_connection(receive, send)
                    return
                elif fault.kind == "http":
                    await _send_raw(send, fault.status, b"<html><body>fake fault</body></html>", b"text/html")
                    return
                else:
                    self.fake_state.record_reject("fault", fault.errcode)
                    payload = {"errcode": fault.errcode, "errmsg": _errmsg(fault.errcode, fault.errmsg)}
                    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
                    await _send_raw(send, 200, data, b"application/json")
                    return
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:
            # The sender gave up (e.g. timed out during a 'slow' fault) before its body was read: nothing
            # was accepted. One line, not a traceback: a fault run does this thousands of times.
            log.info("fake wechat: client went away before its request was read: %s", scope["path"])


async def _send_raw(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class ConnectionDropped(ConnectionError):
    """Raised when a 'drop' fault fires outside uvicorn (e.g. under httpx.ASGITransport)."""


async def _drop_connection(receive: Receive, send: Send) -> None:
    """Close the TCP connection without answering, so the client sees a protocol error."""
    # Read the request body first: closing a socket with unread data sends a RST, and the
    # client would see a reset (ReadError) instead of an orderly "disconnected" (RemoteProtocolError).
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    cycle = getattr(send, "__self__", None)  # uvicorn's RequestResponseCycle
    transport = getattr(cycle, "transport", None)
    if transport is not None and hasattr(cycle, "disconnected"):
        transport.close()
        cycle.disconnected = True  # tell uvicorn not to send its own 500 afterwards
        return
    # Fallback: start a response that never completes, then fail; servers abort the connection.
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]})
    raise ConnectionDropped("fake wechat: connection dropped by fault injection")


def create_app(state: FakeWeChatState | None = None) -> FastAPI:
    """A new fake WeChat/WeCom app with its own state (``app.state.fake``)."""
    st = state if state is not None else FakeWeChatState()
    app = _FakeWeChatApp(title="fake wechat", docs_url=None, redoc_url=None, openapi_url=None)
    app.fake_state = st
    app.state.fake = st

    def reject(kind: str, errcode: int, detail: str | None = None, **extra: Any) -> JSONResponse:
        st.record_reject(kind, errcode)
        return _wx(errcode, detail, **extra)

    def check_app_credentials(kind: str, appid: Any, secret: Any) -> JSONResponse | None:
        if not appid or not isinstance(appid, str):
            return reject(kind, 41002)
        if not secret or not isinstance(secret, str):
            return reject(kind, 41004)
        if st.appid is not None and appid != st.appid:
            return reject(kind, 40013)
        if st.secret is not None and secret != st.secret:
            return reject(kind, 40125)
        return None

    # ---- tokens -----------------------------------------------------------------------

    @app.post("/cgi-bin/stable_token")
    async def stable_token(request: Request) -> JSONResponse:
        st.count_token_request("stable_token")
        body = await _json_body(request)
        if not isinstance(body, dict):
            return reject("token", 47001)
        if body.get("grant_type") != "client_credential":
            return reject("token", 40002)
        bad = check_app_credentials("token", body.get("appid"), body.get("secret"))
        if bad is not None:
            return bad
        token, expires_in = st.issue_stable_token(body["appid"], bool(body.get("force_refresh", False)))
        return JSONResponse({"access_token": token, "expires_in": expires_in})

    @app.get("/cgi-bin/token")
    async def legacy_token(request: Request) -> JSONResponse:
        st.count_token_request("token")
        q = request.query_params
        if q.get("grant_type") != "client_credential":
            return reject("token", 40002)
        bad = check_app_credentials("token", q.get("appid"), q.get("secret"))
        if bad is not None:
            return bad
        token, expires_in = st.issue_legacy_token(q["appid"])
        return JSONResponse({"access_token": token, "expires_in": expires_in})

    @app.get("/cgi-bin/gettoken")
    async def wecom_token(request: Request) -> JSONResponse:
        st.count_token_request("gettoken")
        q = request.query_params
        corpid, corpsecret = q.get("corpid"), q.get("corpsecret")
        if not corpid:
            return reject("token", 41002, "corpid missing")
        if not corpsecret:
            return reject("token", 41004, "corpsecret missing")
        if st.corpid is not None and corpid != st.corpid:
            return reject("token", 40013, "invalid corpid")
        if st.corpsecret is not None and corpsecret != st.corpsecret:
            return reject("token", 40001, "invalid credential")
        token, expires_in = st.issue_wecom_token(corpid, corpsecret)
        return JSONResponse({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": expires_in})

    # ---- mini program subscribe message ----------------------------------------------

    @app.post(SUBSCRIBE_PATH)
    async def subscribe_send(request: Request) -> JSONResponse:
        code = st.check_token(request.query_params.get("access_token"), "wechat")
        if code:
            return reject("subscribe", code)
        body = await _json_body(request)
        if not isinstance(body, dict):
            return reject("subscribe", 47001)
        openid = body.get("touser")
        if not st.openid_ok(openid):
            return reject("subscribe", 40003)
        template_id = body.get("template_id")
        if not st.template_ok(template_id):
            return reject("subscribe", 40037)
        if not st.page_ok(body.get("page")):
            return reject("subscribe", 41030)
        for name, allowed in (
            ("miniprogram_state", ("developer", "trial", "formal")),
            ("lang", ("zh_CN", "en_US", "zh_HK", "zh_TW")),
        ):
            if name in body and body[name] not in allowed:
                return reject("subscribe", 47003, f"argument invalid! {name} invalid")
        data = body.get("data")
        if not isinstance(data, dict):
            return reject("subscribe", 47003, "argument invalid! data invalid")
        for key, item in data.items():
            value = item.get("value") if isinstance(item, dict) else None
            if not check_data_value(data_type_of(key), value):
                return reject("subscribe", 47003, f"argument invalid! data.{key}.value invalid")
        msgid = st.consume_subscribe(openid, template_id, body)
        if msgid is None:
            return reject("subscribe", 43101)
        return JSONResponse({"errcode": 0, "errmsg": "ok", "msgid": msgid})

    # ---- login ------------------------------------------------------------------------

    @app.get("/sns/jscode2session")
    async def jscode2session(request: Request) -> JSONResponse:
        q = request.query_params
        bad = check_app_credentials("jscode2session", q.get("appid"), q.get("secret"))
        if bad is not None:
            return bad
        if q.get("grant_type", "authorization_code") != "authorization_code":
            return reject("jscode2session", 40002)
        code = q.get("js_code")
        if not code:
            return reject("jscode2session", 41008)
        found = st.login(code)
        if found is None:
            return reject("jscode2session", 40029)
        openid, unionid = found
        out: dict[str, Any] = {"openid": openid, "session_key": secrets.token_urlsafe(18)}
        if unionid:
            out["unionid"] = unionid
        return JSONResponse(out)

    # ---- WeCom app message ------------------------------------------------------------

    @app.post(WECOM_SEND_PATH)
    async def wecom_send(request: Request) -> JSONResponse:
        code = st.check_token(request.query_params.get("access_token"), "wecom")
        if code:
            return reject("wecom", code)
        raw = await request.body()
        if has_non_ascii_u_escape(raw):
            return reject("wecom", 40033)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            return reject("wecom", 47001)
        agentid = body.get("agentid")
        if (
            not isinstance(agentid, int)
            or isinstance(agentid, bool)
            or (st.agentid is not None and agentid != st.agentid)
        ):
            return reject("wecom", 40056)
        msgtype = body.get("msgtype")
        if msgtype not in WECOM_MSGTYPES:
            return reject("wecom", 40008)
        code = _check_wecom_content(msgtype, body)
        if code:
            return reject("wecom", code)
        touser = body.get("touser")
        if not isinstance(touser, str):
            touser = ""
        requested: list[str] = []
        seen: set[str] = set()
        for part in touser.split("|"):
            user = part.strip().lower()
            if user and user not in seen:
                seen.add(user)
                requested.append(user)
        if len(requested) > 1000:
            return reject("wecom", 40031)
        if requested == ["@all"]:
            with st.lock:
                requested = sorted(st.wecom_users) or ["@all"]
        valid = [u for u in requested if u == "@all" or st.wecom_user_known(u)]
        invalid = [u for u in requested if u not in valid]
        extra = {
            "invaliduser": "|".join(invalid),
            "invalidparty": str(body.get("toparty") or ""),
            "invalidtag": str(body.get("totag") or ""),
            "unlicenseduser": "",
        }
        if not valid:
            return reject("wecom", 81013, **extra)
        msgid, _delivered, _dropped = st.deliver_wecom(agentid, valid, invalid, body)
        return JSONResponse({"errcode": 0, "errmsg": "ok", **extra, "msgid": msgid})

    # ---- group robot ------------------------------------------------------------------

    @app.post(ROBOT_PATH)
    async def robot_send(request: Request) -> JSONResponse:
        key = request.query_params.get("key")
        if not st.robot_key_ok(key):
            return reject("robot", 93000)
        assert key is not None
        raw = await request.body()
        if has_non_ascii_u_escape(raw):
            return reject("robot", 40033)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            return reject("robot", 47001)
        msgtype = body.get("msgtype")
        if msgtype not in ROBOT_MSGTYPES:
            return reject("robot", 40008)
        code = _check_robot_content(msgtype, body)
        if code:
            return reject("robot", code)
        if not st.deliver_robot(key, body):
            return reject("robot", 45009, "api freq out of limit")
        return JSONResponse({"errcode": 0, "errmsg": "ok"})

    # ---- control endpoints ------------------------------------------------------------

    async def control_body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            return {}
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        return body

    def bad_request(message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=400)

    @app.post("/_fake/reset")
    async def fake_reset(request: Request) -> JSONResponse:
        try:
            body = await control_body(request)
        except ValueError as exc:
            return bad_request(str(exc))
        st.reset(full=bool(body.get("full", False)))
        return JSONResponse({"ok": True})

    @app.get("/_fake/stats")
    async def fake_stats() -> JSONResponse:
        return JSONResponse(st.stats())

    @app.get("/_fake/messages")
    async def fake_messages(kind: str | None = None) -> JSONResponse:
        if kind is not None and kind not in MESSAGE_KINDS:
            return bad_request(f"kind must be one of {list(MESSAGE_KINDS)}")
        messages = st.get_messages(kind)
        return JSONResponse({"count": len(messages), "messages": messages})

    @app.post("/_fake/credits")
    async def fake_add_credits(request: Request) -> JSONResponse:
        try:
            body = await control_body(request)
            openid, template_id = str(body["openid"]), str(body["templateId"])
            count = int(body.get("count", 1))
        except (ValueError, KeyError, TypeError) as exc:
            return bad_request(f"expected {{openid, templateId, count}}: {exc}")
        balance = st.add_credits(openid, template_id, count)
        return JSONResponse({"openid": openid, "templateId": template_id, "count": balance})

    @app.get("/_fake/credits")
    async def fake_get_credits(openid: str, templateId: str) -> JSONResponse:
        return JSONResponse({"openid": openid, "templateId": templateId, "count": st.get_credits(openid, templateId)})

    @app.get("/_fake/tokens")
    async def fake_tokens() -> JSONResponse:
        return JSONResponse({"tokens": st.list_tokens()})

    @app.post("/_fake/tokens/expire")
    async def fake_expire(request: Request) -> JSONResponse:
        try:
            body = await control_body(request)
        except ValueError as exc:
            return bad_request(str(exc))
        return JSONResponse({"changed": st.expire_tokens(body.get("token"))})

    @app.post("/_fake/tokens/revoke")
    async def fake_revoke(request: Request) -> JSONResponse:
        try:
            body = await control_body(request)
        except ValueError as exc:
            return bad_request(str(exc))
        return JSONResponse({"changed": st.revoke_tokens(body.get("token"))})

    @app.post("/_fake/faults")
    async def fake_add_fault(request: Request) -> JSONResponse:
        try:
            body = await control_body(request)
            fault = st.add_fault(
                str(body.get("path", "*")),
                str(body.get("kind", "errcode")),
                errcode=int(body.get("errcode", -1)),
                errmsg=body.get("errmsg"),
                status=int(body.get("status", 502)),
                delay=float(body.get("delay", 1.0)),
                count=None if body.get("count") is None else int(body["count"]),
                rate=None if body.get("rate") is None else float(body["rate"]),
                seed=body.get("seed"),
            )
        except (ValueError, TypeError) as exc:
            return bad_request(str(exc))
        return JSONResponse(fault.to_dict())

    @app.get("/_fake/faults")
    async def fake_list_faults() -> JSONResponse:
        with st.lock:
            faults = [f.to_dict() for f in st.faults]
        return JSONResponse({"faults": faults})

    @app.delete("/_fake/faults")
    async def fake_clear_faults() -> JSONResponse:
        st.clear_faults()
        return JSONResponse({"ok": True})

    @app.post("/_fake/codes")
    async def fake_codes(request: Request) -> JSONResponse:
        try:
            body = await control_body(request)
            code, openid = str(body["code"]), str(body["openid"])
        except (ValueError, KeyError) as exc:
            return bad_request(f"expected {{code, openid, unionid?}}: {exc}")
        st.register_code(code, openid, body.get("unionid"))
        return JSONResponse({"ok": True})

    @app.post("/_fake/wecom/users")
    async def fake_wecom_users(request: Request) -> JSONResponse:
        try:
            body = await control_body(request)
            users = [str(u) for u in body.get("users", [])]
        except (ValueError, TypeError) as exc:
            return bad_request(str(exc))
        current = st.add_wecom_users(*users, replace=bool(body.get("replace", False)))
        return JSONResponse({"users": sorted(current)})

    @app.post("/_fake/openids")
    async def fake_openids(request: Request) -> JSONResponse:
        try:
            body = await control_body(request)
            openids = [str(o) for o in body.get("openids", [])]
        except (ValueError, TypeError) as exc:
            return bad_request(str(exc))
        st.register_openid(*openids)
        return JSONResponse({"ok": True})

    @app.post("/_fake/templates")
    async def fake_templates(request: Request) -> JSONResponse:
        try:
            body = await control_body(request)
            templates = [str(t) for t in body.get("templates", [])]
        except (ValueError, TypeError) as exc:
            return bad_request(str(exc))
        st.register_template(*templates, long_term=bool(body.get("longTerm", False)))
        return JSONResponse({"ok": True})

    @app.post("/_fake/robot/keys")
    async def fake_robot_keys(request: Request) -> JSONResponse:
        try:
            body = await control_body(request)
            keys = [str(k) for k in body.get("keys", [])]
        except (ValueError, TypeError) as exc:
            return bad_request(str(exc))
        st.add_robot_keys(*keys)
        return JSONResponse({"ok": True})

    @app.post("/_fake/clock/advance")
    async def fake_advance(request: Request) -> JSONResponse:
        try:
            body = await control_body(request)
            seconds = float(body["seconds"])
        except (ValueError, KeyError, TypeError) as exc:
            return bad_request(f"expected {{seconds}}: {exc}")
        return JSONResponse({"now": st.advance(seconds)})

    @app.post("/_fake/config")
    async def fake_config(request: Request) -> JSONResponse:
        try:
            body = await control_body(request)
            return JSONResponse(st.configure(**body))
        except (ValueError, TypeError) as exc:
            return bad_request(str(exc))

    return app


def run(host: str = "127.0.0.1", port: int = 9100) -> None:
    """Serve a fresh fake on ``host:port`` until interrupted."""
    import uvicorn

    uvicorn.run(create_app(), host=host, port=port, log_level="info")
