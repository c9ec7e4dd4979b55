"""The HTTP edge under attack: malformed lengths, bodies before sign-in, hostile text, leaky logs,
sign-in throttling that must not lock out an office, and a hung Redis."""

from __future__ import annotations

import json
import logging
import socket
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select
from support import Api, ServerThread
from support.procs import LeadpushProcess
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from leadpush.app import create_app
from leadpush.context import AppContext
from leadpush.errors import ApiError
from leadpush.leads.models import Customer
from leadpush.notify.channels.base import DeliveryJob, Recipient
from leadpush.notify.models import Notification
from leadpush.ratelimit import BREAKER_SECONDS, RateLimiter
from leadpush.wecom.card import textcard

# --------------------------------------------------------------------------------------
# Raw HTTP: what a hostile client really sends
# --------------------------------------------------------------------------------------


def raw_exchange(url: str, head: str, body_part: bytes = b"", timeout: float = 30) -> tuple[int, dict]:
    """Send a request head and only part of its body; return the answer that arrives meanwhile.

    The client never sends the rest, so an answer proves the server did not wait for (or read) the body.
    """
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body_part)
        data = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in data and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        header, _, rest = data.partition(b"\r\n\r\n")
        lines = header.decode("latin1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next(int(v) for k, _, v in (x.partition(":") for x in lines[1:]) if k.lower() == "content-length")
        while len(rest) < length and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        try:
            body = json.loads(rest[:length] or b"null")
        except ValueError:  # the HTTP parser itself refused the request, in plain text
            body = {"text": rest[:length].decode(errors="replace")}
        # Having answered, the server hangs up rather than go on receiving the unwanted body.
        while time.monotonic() < deadline:
            try:
                if not sock.recv(65536):
                    break
            except ConnectionResetError:
                break
        else:
            raise AssertionError("the server kept the connection open")
        return status, body


def head_of(method: str, path: str, *headers: str) -> str:
    return "\n".join([f"{method} {path} HTTP/1.1", "Host: leadpush.test", *headers]) + "\n"


@pytest.mark.parametrize("length", ["29200000 ", "100 ", "+100", "1e3", "0x10", "10, 10", "-1", "١٢"])
def test_a_malformed_content_length_is_400_before_any_body_is_read(api: Api, team, length: str) -> None:
    head = head_of(
        "POST",
        "/api/customers",
        f"Authorization: Bearer {team.manager.token}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    )
    status, body = raw_exchange(api.url, head, b'{"name": "x')
    assert status == 400, body
    if "text" not in body:  # what the HTTP parser lets through, the app refuses with its envelope
        assert body["code"] == "invalid_content_length" and body["success"] is False, body


def test_conflicting_content_lengths_are_400(api: Api, team) -> None:
    head = head_of(
        "POST",
        "/api/customers",
        f"Authorization: Bearer {team.manager.token}",
        "Content-Type: application/json",
        "Content-Length: 5",
        "Content-Length: 50000",
    )
    status, _ = raw_exchange(api.url, head, b'{"nam')
    assert status == 400


@pytest.mark.parametrize(
    "auth, code",
    [(None, "unauthorized"), ("Bearer lp_not-a-real-token", "invalid_token"), ("Basic Zm9vOmJhcg==", "unauthorized")],
)
def test_an_unauthenticated_body_is_refused_before_it_is_read(api: Api, team, auth: str | None, code: str) -> None:
    headers = ["Content-Type: application/json"] + ([f"Authorization: {auth}"] if auth else [])
    # A body within the limit, only 10 bytes of which ever arrive.
    status, body = raw_exchange(
        api.url, head_of("POST", "/api/customers", *headers, "Content-Length: 1000000"), b"{" * 10
    )
    assert (status, body["code"]) == (401, code)
    # A streamed (chunked) body: refused before its first chunk.
    status, body = raw_exchange(api.url, head_of("POST", "/api/users", *headers, "Transfer-Encoding: chunked"))
    assert (status, body["code"]) == (401, code)
    # An oversized one is refused too, whichever of 401 / 413 comes first.
    status, body = raw_exchange(api.url, head_of("PATCH", "/api/users/1", *headers, "Content-Length: 104857600"))
    assert status in (401, 413)
    # Nothing was created meanwhile, and the honest paths still work.
    m = api.client(team.manager)
    assert m.get("/api/customers").json()["data"]["total"] == 0
    assert api.lead(team.manager)["name"] == "张三"
    r = httpx.post(api.url + "/console/api/session", json={"token": team.alice.token})
    assert r.status_code == 200 and r.json()["data"]["user"]["id"] == team.alice.id
    assert httpx.get(api.url + "/healthz").status_code == 200
    assert httpx.get(api.url + "/console/login").status_code == 200


# --------------------------------------------------------------------------------------
# Hostile text
# --------------------------------------------------------------------------------------

LONE = '"\\ud800"'  # the JSON escape of a lone surrogate, as a client sends it


def test_a_lone_surrogate_is_a_422_everywhere(api: Api, team) -> None:
    m = api.client(team.manager)
    admin = api.client(team.admin)
    lead = api.lead(team.manager, assignedTo=team.manager.id)
    json_headers = {"Content-Type": "application/json"}

    def post(client: httpx.Client, method: str, path: str, body: str) -> httpx.Response:
        return client.request(method, path, content=body.encode(), headers=json_headers)

    answers = [
        post(m, "POST", "/api/customers", f'{{"name": {LONE}, "phone": "13800138000"}}'),
        post(m, "POST", "/api/customers", f'{{"name": "张三", "phone": "13800138000", "source": {LONE}}}'),
        post(m, "POST", "/api/customers", f'[{{"name": "张三", "phone": "13800138000", "note": {LONE}}}]'),
        post(m, "POST", f"/api/customers/{lead['id']}/follow-ups", f'{{"content": {LONE}}}'),
        post(
            m,
            "POST",
            "/api/auto-transfer/rules",
            f'{{"name": {LONE}, "condition": "no_follow_up", "thresholdHours": 24, "action": "to_pool"}}',
        ),
        post(admin, "POST", "/api/users", f'{{"name": {LONE}, "role": "sales"}}'),
        post(admin, "PATCH", f"/api/users/{team.bob.id}", f'{{"team": {LONE}}}'),
        post(api.client(team.alice), "POST", "/api/wechat/subscriptions", f'{{{LONE}: "accept"}}'),
        post(api.client(), "POST", "/console/api/session", f'{{"token": {LONE}}}'),
        m.get("/api/customers?keyword=%ED%A0%80"),
    ]
    for r in answers:
        assert r.status_code in (422, 200), (r.request.url, r.text)
        if r.status_code == 200:  # a query string cannot carry a surrogate: it arrives as U+FFFD
            assert r.request.method == "GET" and r.json()["data"]["total"] == 0
        else:
            assert r.json()["code"] == "validation_error", r.text
    assert sum(r.status_code == 422 for r in answers) >= 9
    assert m.get("/api/customers").json()["data"]["total"] == 1


LINE_SPOOFERS = [
    "\n",
    "\r",
    "\u0085",
    "\u2028",
    "\u2029",
    "\u202e",
    "\u202a",
    "\u2066",
    "\u2069",
    "\u200e",
    "\u200f",
    "\u061c",
]


@pytest.mark.parametrize("char", LINE_SPOOFERS, ids=[f"U+{ord(c):04X}" for c in LINE_SPOOFERS])
def test_line_breaks_and_bidi_controls_are_refused_in_single_line_fields(api: Api, team, char: str) -> None:
    m = api.client(team.manager)
    admin = api.client(team.admin)
    spoof = f"张三{char}分配人：总经理"
    refused = [
        m.post("/api/customers", json={"name": spoof, "phone": "13800138000"}),
        m.post("/api/customers", json={"name": "张三", "phone": "13800138000", "source": spoof}),
        m.post("/api/customers", json={"name": "张三", "phone": f"138{char}00138000"}),
        admin.post("/api/users", json={"name": spoof, "role": "sales"}),
        admin.post("/api/users", json={"name": "李四", "role": "sales", "team": spoof}),
        admin.patch(f"/api/users/{team.bob.id}", json={"name": spoof}),
        m.post(
            "/api/auto-transfer/rules",
            json={"name": spoof, "condition": "no_follow_up", "thresholdHours": 24, "action": "to_pool"},
        ),
    ]
    for r in refused:
        assert r.status_code == 422 and r.json()["code"] == "validation_error", (r.request.url, r.text)
        assert "换行" in r.json()["message"] or "控制字符" in r.json()["message"], r.text
    assert m.get("/api/customers").json()["data"]["total"] == 0
    # A follow-up may span lines, but no character may reorder or fake them.
    lead = api.lead(team.manager, assignedTo=team.manager.id)
    r = m.post(f"/api/customers/{lead['id']}/follow-ups", json={"content": f"第一行{char}第二行"})
    if char in "\n\r":
        assert r.status_code == 201 and r.json()["data"]["content"] == "第一行\n第二行", r.text
    else:
        assert r.status_code == 422 and r.json()["code"] == "validation_error", r.text


def test_multi_line_fields_keep_their_lines(api: Api, team) -> None:
    m = api.client(team.manager)
    r = m.post("/api/customers", json={"name": "张三", "phone": "13800138000", "note": "第一行\r\n第二行\n\n第四行"})
    assert r.status_code == 201 and r.json()["data"]["note"] == "第一行\n第二行\n\n第四行"


def test_a_wecom_card_for_a_spoofed_name_already_in_the_database_has_no_extra_lines(api: Api, team) -> None:
    spoof = "张三\n分配人：总经理\u2028电话：110\u0085\u202e来源\r\u2067x"
    with api.ctx.db.write() as session:  # written before validation existed, or by another system
        now = datetime.now(UTC)
        lead = Customer(name=spoof, phone="13800138000", source=f"广告\n{spoof}", status="new", note="")
        session.add(lead)
        session.flush()
        lead_id = lead.id
    r = api.client(team.manager).patch(f"/api/customers/{lead_id}/assign", json={"assignedTo": team.alice.id})
    assert r.status_code == 200, r.text
    with api.ctx.db.read() as session:
        note = session.scalars(select(Notification).where(Notification.recipient_id == team.alice.id)).one()
        job = DeliveryJob(
            delivery_id=1,
            channel="wecom",
            attempts=1,
            lease_until=now + timedelta(seconds=60),
            notification_id=note.id,
            prev_id=None,
            kind=note.kind,
            title=note.title,
            body=note.body,
            payload=note.payload,
            created_at=note.created_at,
            recipient=Recipient(team.alice.id, "李丽", None, "alice"),
        )
    card = textcard(api.ctx.settings, job)
    lines = card["description"].split("\n")
    assert [line.split("：")[0] for line in lines] == ["客户", "电话", "来源", "分配人", "时间"], lines
    forbidden = "\r\u0085\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
    for text in (card["title"], card["description"]):
        assert not any(c in text for c in forbidden), repr(text)
    assert "\n" not in card["title"]
    assert "张三" in card["description"] and "总经理" in card["description"]  # shown, on its own line


# --------------------------------------------------------------------------------------
# Secrets in the access log
# --------------------------------------------------------------------------------------


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_percent_encoded_token_keys_never_reach_the_access_log(api: Api, team) -> None:
    capture = Capture()
    loggers = [logging.getLogger("uvicorn.access"), logging.getLogger("uvicorn.error")]  # WebSockets: .error
    server = ServerThread(create_app(api.ctx, roles=frozenset({"api"})), log_level="info").start()
    for logger in loggers:
        logger.addHandler(capture)
    secrets = [f"SECRET{i}-{team.alice.token[-6:]}" for i in range(6)]
    try:
        keys = ["tok%65n", "%74oken", "TOK%45N", "%54%4F%4B%45%4E", "Token", "access%5Ftoken"]
        for key, secret in zip(keys, secrets, strict=True):
            httpx.get(
                f"{server.url}/api/me?a=1&{key}={secret}", headers={"Authorization": f"Bearer {team.alice.token}"}
            )
        with pytest.raises(ConnectionClosed):
            with connect(f"{server.url.replace('http', 'ws')}/ws?tok%65n={team.alice.token}") as ws:
                ws.recv(timeout=5)
                ws.close()
                ws.recv(timeout=5)
        deadline = time.monotonic() + 30
        while sum("/api/me" in line for line in capture.lines) < len(keys) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for logger in loggers:
            logger.removeHandler(capture)
        server.stop()
    logged = "\n".join(capture.lines)
    assert sum("/api/me" in line for line in capture.lines) == len(keys), logged
    assert "/api/me?a=1&tok%65n=***" in logged and "/ws?tok%65n=***" in logged
    for secret in [*secrets, team.alice.token]:
        assert secret not in logged, logged


# --------------------------------------------------------------------------------------
# Failed sign-ins: throttle the guesser, never the office
# --------------------------------------------------------------------------------------


def ws_close_code(url: str, token: str) -> int | None:
    """Connect to /ws; the close code the server ends with, or None when it says hello."""
    with connect(url.replace("http://", "ws://") + f"/ws?token={token}", open_timeout=30) as ws:
        try:
            first = json.loads(ws.recv(timeout=30))
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
        assert first["type"] == "hello"
        return None


def test_a_valid_token_always_works_while_bad_ones_from_the_same_address_are_throttled(
    api: Api, team, monkeypatch
) -> None:
    clock = [1_000_000.0]
    api.ctx.limiter = RateLimiter(now=lambda: clock[0])
    monkeypatch.setattr(api.ctx.settings, "auth_failures_per_minute", 5)
    bad = api.client("lp_guessing-tokens")
    for _ in range(5):
        assert bad.get("/api/me").json()["code"] == "invalid_token"
    r = bad.get("/api/me")
    assert (r.status_code, r.json()["code"]) == (429, "too_many_requests")
    r = bad.post("/api/customers", json={"name": "x", "phone": "13800138000"})
    assert (r.status_code, r.json()["code"]) == (429, "too_many_requests")
    # A colleague at the same address (the same office NAT) is not locked out, on any door.
    assert api.client(team.alice).get("/api/me").status_code == 200
    assert api.lead(team.manager)["name"] == "张三"
    r = httpx.post(api.url + "/console/api/session", json={"token": team.alice.token})
    assert r.status_code == 200
    assert ws_close_code(api.url, team.alice.token) is None
    # The guesser is told it is a lockout, not a bad token: its client should come back later.
    assert ws_close_code(api.url, "lp_guessing-tokens") == 4429
    r = httpx.post(api.url + "/console/api/session", json={"token": "lp_guessing-tokens"})
    assert (r.status_code, r.json()["code"]) == (429, "too_many_requests")
    clock[0] += 61  # a minute later the bad token is merely bad again
    assert bad.get("/api/me").json()["code"] == "invalid_token"
    assert ws_close_code(api.url, "lp_guessing-tokens") == 1008


def test_failures_are_counted_per_client_behind_a_trusted_proxy_only(api: Api, team, monkeypatch) -> None:
    monkeypatch.setattr(api.ctx.settings, "auth_failures_per_minute", 3)
    # The limit counts per wall-clock minute: hold the limiters' clock so the test never straddles two.
    moment = time.time()
    monkeypatch.setattr(api.ctx.limiter, "_now", lambda: moment)

    def knock(url: str, forwarded_for: str) -> int:
        headers = {"Authorization": "Bearer lp_wrong", "X-Forwarded-For": forwarded_for}
        return httpx.get(url + "/api/me", headers=headers).status_code

    # Loopback (the default trusted proxy, like the compose nginx): each client has its own bucket.
    assert [knock(api.url, "203.0.113.7") for _ in range(4)] == [401, 401, 401, 429]
    assert knock(api.url, "198.51.100.9") == 401
    assert knock(api.url, "198.51.100.9, 203.0.113.7") == 429  # the proxy's own entry is the last one
    # A peer that is not a trusted proxy cannot pick its bucket by sending the header.
    ctx = AppContext.from_settings(api.ctx.settings.model_copy(update={"trusted_proxies": "10.255.255.1"}))
    monkeypatch.setattr(ctx.limiter, "_now", lambda: moment)
    server = ServerThread(create_app(ctx, roles=frozenset({"api"}))).start()
    try:
        codes = [knock(server.url, f"192.0.2.{i}") for i in range(4)]
    finally:
        server.stop()
        ctx.db.dispose()
    assert codes == [401, 401, 401, 429]


# --------------------------------------------------------------------------------------
# A hung Redis
# --------------------------------------------------------------------------------------


class HungRedis:
    """A TCP server that accepts connections and never answers (a Redis stuck in a long command)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.accepts = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepts += 1
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_hung_redis_does_not_slow_requests_down(api: Api, team) -> None:
    hung = HungRedis()
    try:
        api.ctx.limiter = RateLimiter(f"redis://127.0.0.1:{hung.port}/0")
        bad = api.client("lp_wrong")
        admin = api.client(team.admin)
        start = time.monotonic()
        assert bad.get("/api/me").status_code == 401  # the first one finds out Redis is stuck
        first = time.monotonic() - start
        timings = []
        for i in range(10):
            start = time.monotonic()
            r = bad.get("/api/me") if i % 2 else admin.post(f"/api/users/{team.bob.id}/tokens")
            timings.append(time.monotonic() - start)
            assert r.status_code in (401, 201), r.text
        # Before: every limiter call waited out a 1 s socket timeout (2 s for a failed sign-in).
        assert first < 1.0, first
        assert statistics.median(timings) < 0.3, timings
        assert hung.accepts >= 1
    finally:
        hung.close()


def test_the_limiter_tries_redis_again_after_the_breaker_and_counts_locally_meanwhile() -> None:
    hung = HungRedis()
    clock = [0.0]
    try:
        limiter = RateLimiter(f"redis://127.0.0.1:{hung.port}/0", monotonic=lambda: clock[0])
        with pytest.raises(ApiError):
            for _ in range(4):  # the first call finds Redis stuck; the count goes on locally
                limiter.check("test", "k", limit=3)
        tried = hung.accepts
        assert tried >= 1
        clock[0] += BREAKER_SECONDS - 1
        assert limiter.count("test", "k") == 4 and hung.accepts == tried  # still skipped
        clock[0] += 2
        start = time.monotonic()
        limiter.count("test", "k")  # tried again (and found stuck again, quickly)
        assert time.monotonic() - start < 1.0
        deadline = time.monotonic() + 30
        while hung.accepts == tried and time.monotonic() < deadline:
            time.sleep(0.01)
        assert hung.accepts > tried
    finally:
        hung.close()


@pytest.mark.slow  # `leadpush serve` as a subprocess
@pytest.mark.parametrize("trusted, expected", [("10.255.255.1", [401, 401, 401, 429]), ("127.0.0.1", [401] * 4)])
def test_leadpush_serve_trusts_forwarded_for_only_from_the_configured_proxies(
    tmp_path, trusted: str, expected: list[int]
) -> None:
    env = {
        "LEADPUSH_DATABASE_URL": f"sqlite:///{tmp_path}/serve.db",
        "LEADPUSH_TRUSTED_PROXIES": trusted,
        "LEADPUSH_AUTH_FAILURES_PER_MINUTE": "3",
    }
    proc = LeadpushProcess(env, roles=("api",), log_dir=tmp_path).start()
    try:
        headers = [{"Authorization": "Bearer lp_wrong", "X-Forwarded-For": f"192.0.2.{i}"} for i in range(4)]
        codes = [httpx.get(proc.url + "/api/me", headers=h).status_code for h in headers]
    finally:
        proc.stop()
    assert codes == expected
