"""The one settings object: every knob is a LEADPUSH_* environment variable.

JSON-valued settings (the channel policy, the WeChat field map) are parsed here, once, when the
settings are made: the code reads typed objects, and a bad value stops the start with its name.
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from leadpush.notify.policy import ChannelPolicy, parse_policy, parse_preference_channels
from leadpush.wechat.format import parse_field_map


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEADPUSH_", extra="ignore", env_ignore_empty=True)

    database_url: str = "sqlite:///./leadpush.db"
    redis_url: str | None = None
    # Namespace for Redis keys and pub/sub channels: deployments sharing one Redis must differ.
    redis_prefix: str = "leadpush"
    timezone: str = "Asia/Shanghai"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = "INFO"
    # WebSocket keep-alive: a ping every N seconds; a client that does not answer within the timeout is
    # dropped (a phone that went into a tunnel, a laptop closed without a goodbye).
    ws_ping_interval: float = Field(default=20.0, gt=0)
    ws_ping_timeout: float = Field(default=20.0, gt=0)
    # permessage-deflate (src/leadpush/wsprotocol.py): keep the server's compression context between its
    # messages (true: ~38 KB of zlib per idle socket; false: a compressor only while a message is
    # compressed), and the window both directions may use (bits: 10 = 1 KB; uvicorn's own was 12).
    ws_deflate_context_takeover: bool = False
    ws_deflate_window_bits: int = Field(default=10, ge=9, le=15)
    # Live channels: the largest message a client may send (an ack of 1000 ids is about 12 KB), at most
    # this many sockets and concurrent long polls per user on one process, and how often each process
    # re-checks the tokens of its open sockets (the safety net should a "signed out" message be lost).
    ws_max_message_bytes: int = Field(default=32_768, ge=1024, le=16 * 1024 * 1024)
    ws_max_per_user: int = Field(default=20, ge=1)
    longpoll_max_per_user: int = Field(default=5, ge=1)
    session_recheck_seconds: float = Field(default=30.0, gt=0)
    # How long a process uses its copy of the enabled transfer and SLA rules before reading them again; a change
    # made in the process itself applies at once (leadpush.rulecache). 0 = read them on every assignment.
    rule_cache_seconds: float = Field(default=2.0, ge=0, le=3600)
    # How long a process uses its copy of the user and token row a bearer token signs in with; a revoke,
    # deactivation or any other change to users, tokens or teams made in the process applies at once
    # (leadpush.users.authcache), one made in another process within this time. 0 = read on every request.
    auth_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    # Every socket gets {"type":"heartbeat"} this often (one hub-wide task sends them all; the JS client
    # replaces a socket that hears nothing for 70 s).
    ws_heartbeat_seconds: float = Field(default=25.0, gt=0)
    # api role (src/leadpush/gcfreeze.py): while at least this many sockets are open (long polls do not count),
    # the survivors of a full collection are frozen (gc.freeze(), 0: off) once at least gc_freeze_old_objects
    # of them are not frozen, and so is generation 2 after a generation-1 collection once that many wait there
    # (no full pass walks the objects of sockets opening), so no full pass walks many more; the policy checks
    # every gc_freeze_interval seconds. A thaw (unfreeze, full collection, freeze the survivors) follows below the threshold, or once
    # the frozen garbage (measured) reaches gc_unfreeze_share of what the most sockets open held frozen.
    gc_freeze_min_sockets: int = Field(default=50, ge=0)
    gc_freeze_interval: float = Field(default=2.0, gt=0)
    gc_freeze_old_objects: int = Field(default=10_000, ge=1)
    gc_unfreeze_share: float = Field(default=0.25, gt=0, le=1)
    # api role: the threads sync routes run in (anyio's default thread limiter). 0 = as many as the database
    # pool keeps connections (`Database.pool_size`, 20): a request thread then never waits for a connection,
    # and requests beyond it queue cheaply on the event loop instead of holding a connection while waiting
    # for the GIL (issue 17's lock convoy). At most the pool's connections, overflow included
    # (`Database.max_connections`, 40): more threads would only wait for a connection.
    api_threads: int = Field(default=0, ge=0, le=40)
    # api role on PostgreSQL: how many single-lead assignments one api process runs on its event loop at once
    # (`Database.on_loop`); the rest wait their turn in arrival order without holding a connection. The loop
    # also pushes to sockets and relays hints between processes: more at once lengthens every wait in its
    # queue (issue 17: a burst of 1,000 with 64 at once, cross-process push p99 260-650 ms; with 4, 34-39 ms).
    api_loop_slots: int = Field(default=4, ge=1, le=40)
    # Console links (WeCom textcards point here); no trailing slash.
    public_url: str = "http://127.0.0.1:8000"

    # WeChat mini program (subscribe messages). Channel is off unless appid+secret+template are set.
    wechat_appid: str | None = None
    wechat_secret: str | None = None
    wechat_template_id: str | None = None
    wechat_api_base: str = "https://api.weixin.qq.com"
    wechat_page: str = "pages/customer/detail?id={customerId}"
    wechat_miniprogram_state: Literal["developer", "trial", "formal"] = "formal"
    # JSON object: template key -> notification field (customerName, customerPhone, source, assignTime, ...)
    # (NoDecode: the validator below parses the JSON, so a bad value gets a message naming the variable.)
    wechat_field_map: Annotated[dict[str, str], NoDecode] = {
        "thing1": "customerName",
        "phone_number2": "customerPhone",
        "thing3": "source",
        "time4": "assignTime",
    }
    wechat_mask_phone: bool = False
    # Page a digest ("3条新线索") opens; empty = the mini program's home page (no `page` sent).
    wechat_digest_page: str = ""
    # "stable" (POST /cgi-bin/stable_token, shared safely by many servers) or "legacy" (GET /cgi-bin/token).
    wechat_token_mode: str = "stable"
    # After 45009 (daily quota), try again at the next local midnight or after this many seconds, if sooner.
    wechat_quota_retry_seconds: float = Field(default=3600.0, gt=0)
    # Refresh a cached access token this many seconds before it expires.
    token_refresh_margin: float = Field(default=300.0, ge=0)

    # WeCom (企业微信) app messages. Off unless corpid+secret+agentid are set.
    wecom_corpid: str | None = None
    wecom_secret: str | None = None
    wecom_agentid: int | None = None
    wecom_api_base: str = "https://qyapi.weixin.qq.com"
    # Pace per member (WeCom silently drops more than 30 a minute / 1000 an hour); the excess is folded.
    wecom_per_minute: int = Field(default=30, ge=1, le=30)
    wecom_per_hour: int = Field(default=1000, ge=1, le=1000)
    wecom_mask_phone: bool = False
    # WeCom's enable_duplicate_check: the same message to the same member within this many seconds is shown
    # once (a send caught mid-flight by a crash and sent again). 0 = off; WeCom allows at most 4 hours.
    wecom_duplicate_check_seconds: int = Field(default=1800, ge=0, le=14400)
    # WeCom sign-in (offered when corpid+secret+agentid are set): the two hosts the browser is sent to (OAuth
    # inside WeCom's own browser; the QR login page on a desktop), and leadpush's own address as the browser
    # reaches it, for the redirect_uri (its host must be a trusted domain of the WeCom app). Unset = the
    # address of the request itself (scheme from X-Forwarded-Proto when the peer is a trusted proxy).
    wecom_oauth_base: str = "https://open.weixin.qq.com"
    wecom_login_base: str = "https://login.work.weixin.qq.com"
    wecom_redirect_base: str | None = None
    # How long a started WeCom sign-in may take (its state cookie's lifetime).
    wecom_login_state_seconds: int = Field(default=600, ge=60, le=3600)
    # Console paths a WeCom textcard links to, appended to LEADPUSH_PUBLIC_URL.
    console_customer_path: str = "/console/customers/{customerId}"
    console_list_path: str = "/console/customers"

    # Time-window digests (look-back): a push to a person on a channel within this many seconds of the last one
    # waits for the window to end, then everything waiting goes as one message. 0 = every notice on its own.
    digest_window_wechat: float = Field(default=30.0, ge=0, le=3600)
    digest_window_wecom: float = Field(default=10.0, ge=0, le=3600)
    # When a person has this many WeChat credits or fewer left, only new-lead notices may spend them; other
    # notices go to the next channel of their chain (WeCom) instead.
    wechat_credit_reserve: int = Field(default=1, ge=0, le=100)
    # Which push channels people may choose per category (JSON: category -> channels). Unset = both, everywhere.
    preference_channels: Annotated[dict[str, list[str]] | None, NoDecode] = None

    # Which channels each notification kind uses, with fallbacks (JSON; see docs/channels.md). Unset = the default.
    channel_policy: Annotated[ChannelPolicy, NoDecode] = Field(default_factory=lambda: parse_policy(None))

    # Outbound webhook channel (optional). Off unless a URL is set.
    webhook_url: str | None = None
    webhook_secret: str | None = None

    # Delivery engine.
    delivery_max_attempts: int = Field(default=8, ge=1, le=50)
    delivery_backoff_base: float = Field(default=2.0, gt=0)
    delivery_backoff_max: float = Field(default=600.0, gt=0)
    delivery_lease_seconds: float = Field(default=60.0, gt=0)
    delivery_poll_interval: float = Field(default=2.0, gt=0)
    delivery_batch_size: int = Field(default=100, ge=1, le=1000)
    delivery_concurrency: int = Field(default=16, ge=1, le=256)
    send_timeout: float = Field(default=10.0, gt=0)

    # Public pool (公海) rules. 0 turns a rule off.
    claim_daily_limit: int = Field(default=50, ge=0)
    reclaim_cooldown_hours: float = Field(default=24.0, ge=0)
    # Automatic transfer: a lead moved this many times from person to person (since it last left a pool)
    # goes to the pool on its next deadline instead. 0 = no limit.
    transfer_max_moves: int = Field(default=3, ge=0)

    # Rate limits (per minute; 0 = off): failed sign-ins per client address, token issues and
    # WeChat logins per user.
    auth_failures_per_minute: int = Field(default=20, ge=0)
    token_issues_per_minute: int = Field(default=10, ge=0)
    # Peers whose X-Forwarded-For names the real client (comma-separated IPs / CIDR networks; "none" =
    # trust no one). Failed sign-ins are counted per real client, so behind a proxy list it here, or
    # every client shares the proxy's address. Never list a network untrusted clients connect from.
    trusted_proxies: str = "127.0.0.1"

    # People's sessions (password, WeCom, mini-program sign-in) end this long after their last use, and at the
    # latest this long after signing in. API tokens (for systems) do not expire.
    session_idle_hours: float = Field(default=12.0, gt=0)
    session_max_hours: float = Field(default=168.0, gt=0)

    # Limits.
    max_batch: int = 1000
    max_body_bytes: int = 2_000_000
    # A spreadsheet imported as leads (POST /api/customers/import) may be larger than a JSON body.
    max_import_bytes: int = Field(default=5_000_000, ge=1_000, le=100_000_000)
    # Lead intake (POST /api/leads/inbound): at most this many leads in one request (a campaign burst), in a
    # body of at most this many bytes; the signed form webhook accepts a timestamp this far from now.
    max_inbound_batch: int = Field(default=10_000, ge=1, le=100_000)
    max_inbound_bytes: int = Field(default=20_000_000, ge=1_000, le=200_000_000)
    intake_signature_tolerance_seconds: int = Field(default=300, ge=10, le=3600)

    @model_validator(mode="after")
    def _lease_outlives_a_send(self) -> Settings:
        # A channel starts a send only while send_timeout + 1 s of the delivery's lease is left (so its answer
        # is back before another worker may take the delivery); a lease shorter than that could never send.
        if self.delivery_lease_seconds <= self.send_timeout + 1:
            raise ValueError("LEADPUSH_DELIVERY_LEASE_SECONDS 必须大于 LEADPUSH_SEND_TIMEOUT + 1 秒")
        return self

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        example = "应形如 sqlite:///./leadpush.db 或 postgresql://用户:密码@主机:5432/库名"
        try:
            backend = make_url(value).get_backend_name()
        except ArgumentError:
            raise ValueError(f"不是合法的数据库地址，{example}") from None
        if backend == "postgres":
            raise ValueError("请把 postgres:// 改写为 postgresql://")
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"只支持 SQLite 和 PostgreSQL，{example}")
        return value

    @field_validator("wecom_oauth_base", "wecom_login_base", "wecom_redirect_base")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from urllib.parse import urlsplit

        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("必须是 http:// 或 https:// 开头的地址，例如 https://crm.example.com（不带查询参数）")
        return value.strip().rstrip("/")

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("必须是 DEBUG / INFO / WARNING / ERROR / CRITICAL 之一")
        return level

    @model_validator(mode="after")
    def _webhooks_are_signed(self) -> Settings:
        # A receiver checks the signature to know the call is ours; an empty key would let anyone forge it.
        if self.webhook_url and not (self.webhook_secret or "").strip():
            raise ValueError(
                "已设置 LEADPUSH_WEBHOOK_URL 但未设置 LEADPUSH_WEBHOOK_SECRET：webhook 必须签名，"
                "请设置一个足够长的随机密钥（或去掉 LEADPUSH_WEBHOOK_URL 关闭 webhook）"
            )
        return self

    @field_validator("preference_channels", mode="before")
    @classmethod
    def _parse_preference_channels(cls, value: object) -> dict[str, list[str]] | None:
        return parse_preference_channels(value)

    @field_validator("channel_policy", mode="before")
    @classmethod
    def _parse_channel_policy(cls, value: object) -> ChannelPolicy:
        if isinstance(value, ChannelPolicy):
            return value
        if value is None or isinstance(value, str):
            return parse_policy(value)
        raise ValueError("LEADPUSH_CHANNEL_POLICY must be JSON text")

    @field_validator("wechat_field_map", mode="before")
    @classmethod
    def _parse_field_map(cls, value: object) -> object:
        return parse_field_map(value) if isinstance(value, str) else value

    @field_validator("wechat_token_mode")
    @classmethod
    def _check_token_mode(cls, value: str) -> str:
        if value not in ("stable", "legacy"):
            raise ValueError("必须是 stable 或 legacy")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: str) -> str:
        for item in _split_hosts(value):
            try:
                ipaddress.ip_network(item)  # strict: "10.0.0.1/8" is a typo for a network, not a network
            except ValueError:
                raise ValueError(
                    f"LEADPUSH_TRUSTED_PROXIES: {item!r} is not an IP address or network (e.g. 172.30.80.0/24)"
                ) from None
        return value

    @property
    def trusted_proxy_hosts(self) -> list[str]:
        return _split_hosts(self.trusted_proxies)

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def wechat_enabled(self) -> bool:
        return bool(self.wechat_appid and self.wechat_secret and self.wechat_template_id)

    @property
    def wecom_enabled(self) -> bool:
        return bool(self.wecom_corpid and self.wecom_secret and self.wecom_agentid is not None)

    @property
    def webhook_enabled(self) -> bool:
        return bool(self.webhook_url)


def _split_hosts(value: str) -> list[str]:
    if value.strip().lower() == "none":
        return []
    return [item.strip() for item in value.split(",") if item.strip()]
