"""Everything the fake knows, in one thread-safe :class:`FakeWeChatState` per app.

Tokens, credits, login codes, accepted messages, counters, injected faults and WeCom's per-member
pacing. Tests drive it directly through its methods; the control endpoints (`control.py`) do the
same over HTTP.
"""

from __future__ import annotations

import copy
import json
import random
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from leadpush_fakes.wechat.rules import (
    FAULT_KINDS,
    FORCE_REFRESH_DAILY,
    FORCE_REFRESH_INTERVAL,
    LEGACY_TOKEN_DAILY,
    LEGACY_TOKEN_GRACE,
    MESSAGE_KINDS,
    PLATFORM_UTC_OFFSET,
    QUOTA_DAILY,
    QUOTA_MINUTE,
    STABLE_ROTATE_BEFORE,
    STABLE_TOKEN_DAILY,
    STABLE_TOKEN_PER_MINUTE,
    TOKEN_TTL,
    WECOM_CODE_TTL,
    WECOM_DUPLICATE_INTERVAL,
    WECOM_DUPLICATE_MAX,
    WECOM_PER_HOUR,
    WECOM_PER_MINUTE,
)


class PlatformRefusal(Exception):
    """The platform refuses the call with this errcode (a quota or frequency limit); the route answers it."""

    def __init__(self, errcode: int, detail: str | None = None) -> None:
        super().__init__(errcode)
        self.errcode = errcode
        self.detail = detail


# Configurable limits (None = off); the two durations are floats, the rest counts.
LIMIT_FIELDS = (
    "legacy_token_grace",
    "legacy_token_daily_limit",
    "stable_token_per_minute",
    "stable_token_daily_limit",
    "force_refresh_daily_limit",
    "force_refresh_interval",
    "subscribe_daily_quota",
    "jscode2session_per_minute",
    "wecom_per_minute",
    "wecom_per_hour",
)
FLOAT_LIMITS = frozenset({"legacy_token_grace", "force_refresh_interval"})


@dataclass
class TokenRecord:
    token: str
    namespace: str  # "wechat" | "wecom"
    endpoint: str  # "stable_token" | "token" | "gettoken"
    owner: str  # appid or corpid
    issued_at: float
    expires_at: float
    status: str = "valid"  # "valid" | "expired" | "revoked"
    # A legacy token superseded by a newer one keeps working until then, and is "not latest" (40001) after.
    dies_at: float | None = None


@dataclass
class WecomCode:
    """A sign-in code WeCom issued (OAuth in its browser, or a confirmed QR login)."""

    identity: tuple[str, str]  # ("userid", "alice") for a member, ("openid", "o…") for anyone else
    issued_at: float
    redirect_host: str  # host[:port] of the redirect_uri it was issued for (50001 if not trusted)


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
    ``long_term_templates``, ``allowed_pages``, ``wecom_users``,
    ``wecom_trusted_domains`` (the sign-in app's 可信域名, host[:port]; None = any),
    ``token_ttl``, ``clock``.

    Limits (see rules.py for the platform's figures; every one is a plain attribute, settable through
    ``configure`` / ``POST /_fake/config``; None turns it off). Days are the platform's (Beijing time) on
    the fake's clock (``clock`` plus ``advance``), minutes are clock minutes:
    ``legacy_token_grace`` (s a legacy token keeps working after a newer one is issued; then 40001),
    ``legacy_token_daily_limit`` (GET /cgi-bin/token calls a day; beyond: 45009),
    ``stable_token_per_minute`` / ``stable_token_daily_limit`` (stable_token calls; 45011 / 45009),
    ``force_refresh_daily_limit`` (force_refresh:true a day; beyond: 45009),
    ``force_refresh_interval`` (s at least between two force_refresh:true; sooner: 45011),
    ``subscribe_daily_quota`` (subscribe/send calls a day past the token check; beyond: 45009; default off),
    ``jscode2session_per_minute`` (45011; default off), ``wecom_per_minute`` / ``wecom_per_hour`` (WeCom
    messages per member per app; beyond them messages are dropped silently).
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
        wecom_trusted_domains: Iterable[str] | None = None,
        token_ttl: int = TOKEN_TTL,
        clock: Callable[[], float] = time.time,
        legacy_token_grace: float | None = LEGACY_TOKEN_GRACE,
        legacy_token_daily_limit: int | None = LEGACY_TOKEN_DAILY,
        stable_token_per_minute: int | None = STABLE_TOKEN_PER_MINUTE,
        stable_token_daily_limit: int | None = STABLE_TOKEN_DAILY,
        force_refresh_daily_limit: int | None = FORCE_REFRESH_DAILY,
        force_refresh_interval: float | None = FORCE_REFRESH_INTERVAL,
        subscribe_daily_quota: int | None = None,
        jscode2session_per_minute: int | None = None,
        wecom_per_minute: int | None = WECOM_PER_MINUTE,
        wecom_per_hour: int | None = WECOM_PER_HOUR,
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
        self.wecom_trusted_domains: list[str] | None = (
            None if wecom_trusted_domains is None else [d.lower() for d in wecom_trusted_domains]
        )
        self.token_ttl = token_ttl
        self.legacy_token_grace = legacy_token_grace
        self.legacy_token_daily_limit = legacy_token_daily_limit
        self.stable_token_per_minute = stable_token_per_minute
        self.stable_token_daily_limit = stable_token_daily_limit
        self.force_refresh_daily_limit = force_refresh_daily_limit
        self.force_refresh_interval = force_refresh_interval
        self.subscribe_daily_quota = subscribe_daily_quota
        self.jscode2session_per_minute = jscode2session_per_minute
        self.wecom_per_minute = wecom_per_minute
        self.wecom_per_hour = wecom_per_hour
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
        "wecom_trusted_domains",
        "token_ttl",
        *LIMIT_FIELDS,
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
        # WeCom sign-in: who the person at the (fake) phone or WeCom browser is, and the codes issued.
        self.wecom_login_identity: tuple[str, str] | None = None
        self.wecom_codes: dict[str, WecomCode] = {}
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
        # enable_duplicate_check: the messages WeCom showed, by what makes two the same, and the repeats
        # it answered 0 to without showing them again.
        self._wecom_shown: dict[tuple[Any, ...], tuple[float, str]] = {}
        self.wecom_duplicates: list[dict[str, Any]] = []
        self._wecom_windows: dict[tuple[int, str], deque[float]] = {}
        self._msgid = 10**18 + random.getrandbits(59)
        self._seq = 0
        # Quota counters: (name, "day" | "minute") -> (period index, calls counted in it).
        self._quota: dict[tuple[str, str], tuple[int, int]] = {}
        self._last_force: dict[str, float] = {}  # appid -> time of its last accepted force_refresh
        self.force_refreshes: list[float] = []  # times of every accepted force_refresh (tests, benchmarks)

    # ---- time -----------------------------------------------------------------------

    def now(self) -> float:
        return self.clock() + self.time_offset

    def advance(self, seconds: float) -> float:
        """Move the fake's notion of time forward (on top of ``clock``)."""
        with self.lock:
            self.time_offset += seconds
            return self.now()

    def platform_day(self, now: float | None = None) -> int:
        """The platform's day number (days since 1970-01-01 in Beijing time): daily quotas reset with it."""
        return int(((self.now() if now is None else now) + PLATFORM_UTC_OFFSET) // 86400)

    # ---- quotas ----------------------------------------------------------------------

    def _period(self, per: str, now: float) -> int:
        return self.platform_day(now) if per == "day" else int(now // 60)

    def _used(self, name: str, per: str, now: float) -> int:
        period, used = self._quota.get((name, per), (-1, 0))
        return used if period == self._period(per, now) else 0

    def _take(self, name: str, per: str, limit: int | None, now: float) -> None:
        """Count one call of `name` in this day / minute; PlatformRefusal (45009 / 45011) past `limit`."""
        used = self._used(name, per, now)
        if limit is not None and used >= limit:
            raise PlatformRefusal(QUOTA_DAILY if per == "day" else QUOTA_MINUTE)
        self._quota[(name, per)] = (self._period(per, now), used + 1)

    def take_quota(self, api: str) -> int:
        """Count one call of a quota'd API ("subscribe" or "jscode2session"): 0, or the errcode refusing it."""
        limits = {
            "subscribe": ("day", self.subscribe_daily_quota),
            "jscode2session": ("minute", self.jscode2session_per_minute),
        }
        per, limit = limits[api]
        with self.lock:
            try:
                self._take(api, per, limit, self.now())
            except PlatformRefusal as refusal:
                return refusal.errcode
            return 0

    def clear_quota(self) -> None:
        """What the platform's /cgi-bin/clear_quota does: today's daily counts start again from 0."""
        with self.lock:
            for key in [k for k in self._quota if k[1] == "day"]:
                del self._quota[key]

    def quota_usage(self) -> dict[str, Any]:
        """Calls counted today (platform day) and this minute, per API, and the forced refreshes."""
        with self.lock:
            now = self.now()
            out: dict[str, Any] = {"day": self.platform_day(now), "today": {}, "thisMinute": {}}
            for name, per in self._quota:
                used = self._used(name, per, now)
                if used:
                    out["today" if per == "day" else "thisMinute"][name] = used
            out["forceRefreshes"] = len(self.force_refreshes)
            return out

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
        """The app's stable token (PlatformRefusal past a limit: 45011 too frequent, 45009 a day's quota)."""
        with self.lock:
            now = self.now()
            self._take("stable_token", "minute", self.stable_token_per_minute, now)
            self._take("stable_token", "day", self.stable_token_daily_limit, now)
            if force_refresh:
                last = self._last_force.get(appid)
                interval = self.force_refresh_interval
                if interval is not None and last is not None and now - last < interval:
                    raise PlatformRefusal(QUOTA_MINUTE)
                self._take("force_refresh", "day", self.force_refresh_daily_limit, now)
                self._last_force[appid] = now
                self.force_refreshes.append(now)
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
        """A new legacy token; the app's earlier ones die `legacy_token_grace` seconds from now (40001 after)."""
        with self.lock:
            now = self.now()
            self._take("token", "day", self.legacy_token_daily_limit, now)
            if self.legacy_token_grace is not None:
                dies_at = now + self.legacy_token_grace
                for old in self.tokens.values():
                    if old.endpoint == "token" and old.owner == appid and old.status == "valid":
                        old.dies_at = dies_at if old.dies_at is None else min(old.dies_at, dies_at)
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
            if rec.dies_at is not None and self.now() >= rec.dies_at:
                return 40001  # a superseded legacy token past its grace: "not latest"
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
                    "status": _status_of(r, now),
                    "expiresIn": max(0, int(r.expires_at - now)),
                    "diesIn": None if r.dies_at is None else max(0, int(r.dies_at - now)),
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
                "wecom_duplicates": len(self.wecom_duplicates),
                "faults_fired": dict(self.faults_fired),
                "messages": {k: len(v) for k, v in self.messages.items()},
                "quotas": self.quota_usage(),
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

    def get_wecom_duplicates(self) -> list[dict[str, Any]]:
        """Messages answered errcode 0 but not shown again: repeats caught by enable_duplicate_check."""
        with self.lock:
            return list(self.wecom_duplicates)

    def _duplicate_check(self, agentid: int, users: list[str], body: dict[str, Any], now: float) -> Any:
        """(key, the earlier showing's msgid or None). The same message is the same recipients, msgtype
        and content; it counts as a repeat only when this send asks for the check and the earlier one was
        shown within its `duplicate_check_interval` (default 1800 s, at most 4 hours)."""
        msgtype = body.get("msgtype")
        content = json.dumps(body.get(msgtype), ensure_ascii=False, sort_keys=True)
        key = (
            agentid,
            tuple(sorted(users)),
            str(body.get("toparty") or ""),
            str(body.get("totag") or ""),
            msgtype,
            content,
        )
        if body.get("enable_duplicate_check") not in (1, True, "1"):
            return key, None
        interval = body.get("duplicate_check_interval", WECOM_DUPLICATE_INTERVAL)
        if not isinstance(interval, int) or isinstance(interval, bool) or interval <= 0:
            interval = WECOM_DUPLICATE_INTERVAL
        interval = min(interval, WECOM_DUPLICATE_MAX)
        earlier = self._wecom_shown.get(key)
        if earlier is not None and now - earlier[0] < interval:
            return key, earlier[1]
        return key, None

    def deliver_wecom(
        self, agentid: int, users: list[str], invalid: list[str], body: dict[str, Any]
    ) -> tuple[str, list[str], list[str]]:
        """Apply the duplicate check and per-member pacing; returns (msgid, delivered, dropped).

        A repeat caught by enable_duplicate_check is answered as accepted (the first showing's msgid) but
        neither shown nor counted against the member's pace; it is kept in `wecom_duplicates`.
        """
        with self.lock:
            now = self.now()
            key, shown_as = self._duplicate_check(agentid, users, body, now)
            if shown_as is not None:
                self.wecom_duplicates.append(
                    {"msgid": shown_as, "agentid": agentid, "touser": users, "body": body, "receivedAt": now}
                )
                return shown_as, [], []
            delivered: list[str] = []
            dropped: list[str] = []
            per_minute = self.wecom_per_minute
            for user in users:
                window = self._wecom_windows.setdefault((agentid, user), deque())
                while window and window[0] <= now - 3600:
                    window.popleft()
                last_minute = 0
                for t in reversed(window):
                    if t <= now - 60:
                        break
                    last_minute += 1
                    if per_minute is not None and last_minute >= per_minute:
                        break
                over_minute = per_minute is not None and last_minute >= per_minute
                if over_minute or (self.wecom_per_hour is not None and len(window) >= self.wecom_per_hour):
                    dropped.append(user)
                    self.wecom_dropped[user] += 1
                else:
                    window.append(now)
                    delivered.append(user)
            msgid = secrets.token_urlsafe(24)
            if delivered:
                if len(self._wecom_shown) >= 10_000:  # forget what no interval can reach any more
                    self._wecom_shown = {k: v for k, v in self._wecom_shown.items() if now - v[0] < WECOM_DUPLICATE_MAX}
                self._wecom_shown[key] = (now, msgid)
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

    # ---- WeCom sign-in (OAuth in WeCom's browser, QR login on a desktop) ----------------

    def set_wecom_login(self, *, userid: str | None = None, openid: str | None = None) -> tuple[str, str] | None:
        """Who every sign-in code issued from now on stands for: a member's userid, or the openid of
        someone outside the corp; neither = nobody (the sign-in pages then refuse to issue codes)."""
        with self.lock:
            if userid:
                self.wecom_login_identity = ("userid", userid)
            elif openid:
                self.wecom_login_identity = ("openid", openid)
            else:
                self.wecom_login_identity = None
            return self.wecom_login_identity

    def issue_wecom_code(self, redirect_host: str) -> str | None:
        """A fresh sign-in code for the current identity (None when no identity is set)."""
        with self.lock:
            if self.wecom_login_identity is None:
                return None
            code = secrets.token_urlsafe(24)
            self.wecom_codes[code] = WecomCode(self.wecom_login_identity, self.now(), redirect_host.lower())
            self.accepted["wecom_codes_issued"] += 1
            return code

    def redeem_wecom_code(self, code: str) -> tuple[int, tuple[str, str] | None]:
        """(0, identity) for a valid code, spending it; else (40029 or 50001, None).

        Like the platform: a code works once and for 5 minutes, and only if the redirect_uri it was
        issued for is on the app's trusted domains.
        """
        with self.lock:
            found = self.wecom_codes.pop(code, None)
            if found is None or self.now() - found.issued_at > WECOM_CODE_TTL:
                return 40029, None
            trusted = self.wecom_trusted_domains
            if trusted is not None and found.redirect_host not in trusted:
                return 50001, None
            self.accepted["wecom_getuserinfo"] += 1
            return 0, found.identity

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
        "wecom_trusted_domains",
        "token_ttl",
        *LIMIT_FIELDS,
    )

    def configure(self, **values: Any) -> dict[str, Any]:
        with self.lock:
            for name, value in values.items():
                if name not in self.CONFIG_FIELDS:
                    raise ValueError(f"unknown config field {name!r}")
                if name == "allowed_pages":
                    value = list(value)
                if name == "wecom_trusted_domains" and value is not None:
                    value = [str(d).lower() for d in value]
                if name in LIMIT_FIELDS and value is not None:
                    value = float(value) if name in FLOAT_LIMITS else int(value)
                    if value < 0:
                        raise ValueError(f"{name} must be >= 0 or null")
                setattr(self, name, value)
            return {name: getattr(self, name) for name in self.CONFIG_FIELDS}


def _status_of(rec: TokenRecord, now: float) -> str:
    if rec.status != "valid":
        return rec.status
    if rec.dies_at is not None and now >= rec.dies_at:
        return "revoked"  # superseded (legacy), past its grace
    return "valid" if now < rec.expires_at else "expired"
