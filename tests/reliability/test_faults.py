"""Fault injection on the real services: every committed notification arrives, once per channel.

Each test runs leadpush for real (an in-process uvicorn or `leadpush serve` subprocesses) on
PostgreSQL and, where it matters, Redis, with the fake WeChat server and a webhook receiver over
real HTTP, and breaks something in the middle of a burst of assignments:

- the WeChat API failing 30% of sends with -1 and timing out on 10% (1,000 assignments);
- WeChat access tokens revoked / expired mid-burst;
- Redis stopped and restarted mid-burst (a cluster of api and worker processes);
- PostgreSQL stopped (crashed) and restarted mid-burst (a private cluster, see support/pgcluster.py);
- kill -9 of a worker process and of an API process (2 api + 2 workers).

"Once" is counted where the message lands: WeChat messages at the fake by page (one page per lead),
webhooks at the receiver by X-Leadpush-Delivery, in-app by notification id on each WebSocket client.
The one documented exception (docs/channels.md, "The mid-flight duplicate exception") is a send the
platform received whose answer leadpush never recorded; where a test provokes it (kill -9, a
database outage between the send and its record), it measures the re-sends and holds them to the
bound: the number of sends in flight, i.e. LEADPUSH_DELIVERY_CONCURRENCY.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from leadpush_fakes.wechat import SUBSCRIBE_PATH
from sqlalchemy import func, select
from support import REDIS_URL, postgres_database, service_unavailable, start_stack
from support.channels import TEMPLATE, FakeWeChatServer, channel_settings, strict_state
from support.leads import create_leads
from support.pgcluster import PrivatePostgres
from support.procs import LeadpushProcess, PrivateRedis
from support.receiver import WebhookReceiver
from support.wsclient import WsClient
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from leadpush.clock import SystemClock
from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.migrate import upgrade
from leadpush.notify.models import Delivery
from leadpush.users.service import create_user
from leadpush.wechat.credits import add_credits
from leadpush.wechat.models import WechatSubscription

# Fault injection: bursts of 1,000 assignments, private PostgreSQL and Redis stopped mid-burst (~80 s on a busy machine).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PAGE = "pages/customer/detail?id={}"


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


@dataclass
class Seller:
    id: int
    token: str
    openid: str | None


def make_user(ctx: AppContext, name: str, role: str = "sales", **kw: Any) -> Seller:
    with ctx.db.write() as session:
        user, token = create_user(session, name=name, role=role, team="A", create_missing_team=True, **kw)
        return Seller(user.id, token, user.wechat_openid)


def give_credits(ctx: AppContext, fake: FakeWeChatServer, seller: Seller, leadpush: int, at_fake: int) -> None:
    """Credits in leadpush's ledger (as the mini program's `accept` reports add them) and at WeChat."""
    assert seller.openid
    with ctx.db.write() as session:
        add_credits(session, seller.id, [TEMPLATE] * leadpush, ctx.clock.now())
    fake.state.add_credits(seller.openid, TEMPLATE, at_fake)


def credits_left(ctx: AppContext, seller: Seller) -> int:
    with ctx.db.read() as session:
        return (
            session.scalar(
                select(WechatSubscription.credits).where(
                    WechatSubscription.user_id == seller.id, WechatSubscription.template_id == TEMPLATE
                )
            )
            or 0
        )


def statuses(ctx: AppContext) -> dict[tuple[str, str], int]:
    with ctx.db.read() as session:
        rows = session.execute(
            select(Delivery.channel, Delivery.status, func.count()).group_by(Delivery.channel, Delivery.status)
        ).all()
    return {(channel, status): n for channel, status, n in rows}


def settle(ctx: AppContext, expected: dict[str, int], timeout: float) -> dict[tuple[str, str], int]:
    """Wait until every channel has `expected[channel]` deliveries and none is still on its way."""
    deadline = time.monotonic() + timeout
    while True:
        counts = statuses(ctx)
        per_channel = Counter()
        busy = 0
        for (channel, status), n in counts.items():
            per_channel[channel] += n
            if status in ("pending", "sending", "failed"):
                busy += n
        if busy == 0 and all(per_channel[c] >= n for c, n in expected.items()):
            return counts
        if time.monotonic() > deadline:
            return counts
        time.sleep(0.1)


class WsCollector:
    """A WebSocket client read continuously by a thread (a passive socket would stop answering pings).

    With `urls`, a closed connection is re-opened on the next URL (as a client behind a load balancer
    would) and resumes after the last id it received.
    """

    def __init__(self, urls: list[str], token: str, reconnect: bool = False) -> None:
        self.urls = urls
        self.token = token
        self.reconnect = reconnect
        self.ids: list[int] = []
        self.messages: list[dict[str, Any]] = []
        self.connections = 1
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.ws = WsClient(urls[0], token, resume=0)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        turn = 0
        while not self._stop.is_set():
            message = self.ws._recv(0.2)
            if message is not None and "id" in message:
                with self.lock:
                    self.ids.append(message["id"])
                    self.messages.append(message)
            if not self.ws.closed:
                continue
            if not self.reconnect:
                return
            while not self._stop.is_set():
                turn += 1
                url = self.urls[turn % len(self.urls)]
                try:
                    self.ws = WsClient(url, self.token, resume=max(self.ids, default=0))
                    self.connections += 1
                    break
                except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError, AssertionError):
                    time.sleep(0.2)

    def count(self) -> int:
        with self.lock:
            return len(self.ids)

    def wait_for(self, n: int, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        while self.count() < n and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # anything extra (a duplicate) would arrive now
        with self.lock:
            return list(self.ids)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.ws.close()


def pages_at_fake(fake: FakeWeChatServer) -> Counter[str]:
    return Counter(m["page"] for m in fake.state.get_messages("subscribe"))


def duplicates(counter: Counter[Any]) -> int:
    return sum(n - 1 for n in counter.values() if n > 1)


# --------------------------------------------------------------------------------------
# 1. WeChat failing 30% with -1 and timing out 10% of the time, during 1,000 assignments
# --------------------------------------------------------------------------------------

ASSIGNMENTS = 1000
SELLERS = 5
SEND_TIMEOUT = 1.0
SLACK = 5  # credits the fake holds beyond leadpush's, so a duplicate shows up as a count, not a 43101


@contextmanager
def wechat_stack(fake: FakeWeChatServer, tmp_path: Path, **overrides: Any) -> Iterator[tuple[AppContext, str]]:
    """`leadpush serve --role api --role worker` on a fresh PostgreSQL database, WeChat on the fake.

    A process of its own (as in production), so the test's clients and the fake do not share its GIL.
    """
    settings: dict[str, Any] = channel_settings(
        fake.url,
        wecom_corpid=None,  # WeChat only: a dead WeChat delivery must show as dead, not fall back
        delivery_backoff_base=0.05,
        delivery_backoff_max=1.0,
        delivery_max_attempts=40,
        delivery_poll_interval=0.2,
        delivery_concurrency=32,
        send_timeout=SEND_TIMEOUT,
        log_level="WARNING",
    )
    settings.update(overrides)
    with postgres_database() as url:
        env = {f"LEADPUSH_{k.upper()}": str(v) for k, v in settings.items() if v is not None}
        env["LEADPUSH_DATABASE_URL"] = url
        upgrade(url)
        ctx = AppContext.from_settings(Settings(database_url=url, wechat_template_id=TEMPLATE))
        node = LeadpushProcess(env, ("api", "worker"), tmp_path, "wechat").start()
        try:
            yield ctx, node.url
        finally:
            node.stop()
            ctx.db.dispose()


def assign_all(base_url: str, token: str, plan: list[tuple[int, int]], threads: int = 8) -> None:
    """PATCH /api/customers/{id}/assign for each (lead, seller) of `plan`, from a few client threads."""
    local = threading.local()

    def one(item: tuple[int, int]) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        lead, to = item
        r = local.client.patch(f"/api/customers/{lead}/assign", json={"assignedTo": to})
        assert r.status_code == 200, r.text

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, plan))


def test_wechat_failing_30pct_and_timing_out_10pct_during_1000_assignments_delivers_each_once(tmp_path: Path) -> None:
    """-1 on 30% of sends, and 10% answered only after the client's timeout.

    The fake's 'slow' fault sleeps *before* handling the request, and by the time it wakes the client
    (send_timeout 1 s) has given up and closed the connection, so the fake never accepts a timed-out
    message: every timeout here is "not received", and no duplicate is allowed. (A timeout after the
    platform accepted is the documented mid-flight exception; the kill -9 and PostgreSQL tests below
    measure that one.)
    """
    with FakeWeChatServer(strict_state()) as fake, wechat_stack(fake, tmp_path) as (ctx, url):
        # 10% of sends time out (the fault sleeps 2.5x the client's timeout), then -1 on 1/3 of the rest = 30%.
        fake.state.add_fault(SUBSCRIBE_PATH, "slow", delay=SEND_TIMEOUT * 2.5, rate=0.10, seed=8)
        fake.state.add_fault(SUBSCRIBE_PATH, "errcode", errcode=-1, rate=0.30 / 0.90, seed=9)

        manager = make_user(ctx, "王经理", "manager")
        sellers = [make_user(ctx, f"销售{i}", wechat_openid=f"o-seller-{i}") for i in range(SELLERS)]
        per_seller = ASSIGNMENTS // SELLERS
        for s in sellers:
            give_credits(ctx, fake, s, per_seller, per_seller + SLACK)
        sockets = {s.id: WsCollector([url], s.token) for s in sellers}

        leads = create_leads(url, manager.token, ASSIGNMENTS)
        plan = [(lead, sellers[i % SELLERS].id) for i, lead in enumerate(leads)]
        started = time.monotonic()
        assign_all(url, manager.token, plan)
        assigned_in = time.monotonic() - started

        counts = settle(ctx, {"inapp": ASSIGNMENTS, "wechat": ASSIGNMENTS}, timeout=45)
        settled_in = time.monotonic() - started
        stats = fake.state.stats()
        fired = stats["faults_fired"]
        attempts = fired.get("slow", 0) + fired.get("errcode", 0) + ASSIGNMENTS
        print(
            f"\n{ASSIGNMENTS} assignments in {assigned_in:.1f}s, settled in {settled_in:.1f}s; {attempts} WeChat "
            f"sends: {fired.get('errcode', 0)} x -1, {fired.get('slow', 0)} timeouts; {counts}"
        )
        assert counts == {("inapp", "sent"): ASSIGNMENTS, ("wechat", "sent"): ASSIGNMENTS}, (counts, stats)

        # WeChat: exactly one accepted message per lead, matching the delivery's provider id.
        pages = pages_at_fake(fake)
        assert set(pages) == {PAGE.format(lead) for lead in leads}
        assert duplicates(pages) == 0, pages.most_common(5)
        with ctx.db.read() as session:
            provider_ids = set(session.scalars(select(Delivery.provider_id).where(Delivery.channel == "wechat")))
        assert provider_ids == {str(m["msgid"]) for m in fake.state.get_messages("subscribe")}
        # Every credit spent exactly once, on both sides.
        for s in sellers:
            assert credits_left(ctx, s) == 0
            assert fake.state.get_credits(s.openid or "", TEMPLATE) == SLACK

        # In-app: each seller's socket got each of their notifications once, in order.
        for s in sellers:
            ws = sockets[s.id]
            ids = ws.wait_for(per_seller, timeout=20)
            ws.close()
            assert len(ids) == len(set(ids)) == per_seller, (s.id, len(ids), len(set(ids)))
            assert ids == sorted(ids)

        # The faults really fired at the advertised rates.
        assert fired["slow"] >= 0.07 * attempts and fired["errcode"] >= 0.25 * attempts, fired


# --------------------------------------------------------------------------------------
# 2. Access tokens revoked (and expired) mid-burst
# --------------------------------------------------------------------------------------

TOKEN_BURST = 300
TOKEN_EVENTS = 6


def test_tokens_revoked_mid_burst_every_delivery_arrives_once_with_few_refreshes(tmp_path: Path) -> None:
    """WeChat invalidates the access token (40001) or expires it (42001) six times while sends are on
    the wire: each send that meets the dead token refreshes it and is sent once more; the refresh is
    single-flight, so a revocation costs one token fetch, not one per send in flight."""
    with FakeWeChatServer(strict_state()) as fake, wechat_stack(fake, tmp_path) as (ctx, url):
        manager = make_user(ctx, "王经理", "manager")
        sellers = [make_user(ctx, f"销售{i}", wechat_openid=f"o-token-{i}") for i in range(3)]
        per_seller = TOKEN_BURST // len(sellers)
        for s in sellers:
            give_credits(ctx, fake, s, per_seller, per_seller + SLACK)
        leads = create_leads(url, manager.token, TOKEN_BURST)
        plan = [(lead, sellers[i % len(sellers)].id) for i, lead in enumerate(leads)]

        events: list[tuple[str, int, int]] = []
        done = threading.Event()

        def saboteur() -> None:
            # Each time another 1/(events+1) of the burst has reached WeChat, kill the live token(s).
            for k in range(1, TOKEN_EVENTS + 1):
                target = k * TOKEN_BURST // (TOKEN_EVENTS + 1)
                while len(fake.state.get_messages("subscribe")) < target and not done.is_set():
                    time.sleep(0.005)
                if done.is_set():
                    return
                kind = "revoke" if k % 2 else "expire"
                n = fake.state.revoke_tokens() if kind == "revoke" else fake.state.expire_tokens()
                events.append((kind, target, n))

        thread = threading.Thread(target=saboteur, daemon=True)
        thread.start()
        assign_all(url, manager.token, plan)
        counts = settle(ctx, {"inapp": TOKEN_BURST, "wechat": TOKEN_BURST}, timeout=30)
        done.set()
        thread.join(timeout=5)
        stats = fake.state.stats()
        rejected = stats["rejected_by_kind"].get("subscribe", {})
        fetches = stats["token_requests"].get("stable_token", 0)
        with ctx.db.read() as session:
            attempts = Counter(session.scalars(select(Delivery.attempts).where(Delivery.channel == "wechat")))
        print(
            f"\ntoken events {events}; sends refused {rejected}; token fetches {fetches}; "
            f"wechat attempts per delivery {dict(attempts)}"
        )
        assert len(events) == TOKEN_EVENTS, events
        assert counts == {("inapp", "sent"): TOKEN_BURST, ("wechat", "sent"): TOKEN_BURST}, (counts, stats)
        pages = pages_at_fake(fake)
        assert set(pages) == {PAGE.format(lead) for lead in leads}
        assert duplicates(pages) == 0, pages.most_common(5)
        for s in sellers:
            assert credits_left(ctx, s) == 0
            assert fake.state.get_credits(s.openid or "", TEMPLATE) == SLACK
        # Sends did meet the dead tokens...
        assert rejected.get(40001, 0) + rejected.get(42001, 0) >= TOKEN_EVENTS, rejected
        # ...and each revocation cost about one fetch: the first token, then one (at most two, when
        # WeChat hands back the refused token and force_refresh is needed) per event.
        assert fetches <= 1 + 2 * TOKEN_EVENTS, stats["token_requests"]


# --------------------------------------------------------------------------------------
# Clusters of `leadpush serve` processes
# --------------------------------------------------------------------------------------


def require_redis(url: str) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        service_unavailable("Redis", exc)


@dataclass
class Cluster:
    """leadpush processes sharing one database (and Redis), WeChat on the fake, webhooks to a receiver."""

    db_url: str
    fake: FakeWeChatServer
    receiver: WebhookReceiver
    log_dir: Path
    redis_url: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    procs: dict[str, LeadpushProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        upgrade(self.db_url)
        self.ctx = AppContext.from_settings(Settings(database_url=self.db_url, wechat_template_id=TEMPLATE))
        self.env = {
            "LEADPUSH_DATABASE_URL": self.db_url,
            "LEADPUSH_LOG_LEVEL": "WARNING",
            "LEADPUSH_WEBHOOK_URL": self.receiver.url,
            "LEADPUSH_WEBHOOK_SECRET": "s3cret-faults",
            "LEADPUSH_DELIVERY_BACKOFF_BASE": "0.1",
            "LEADPUSH_DELIVERY_BACKOFF_MAX": "1",
            "LEADPUSH_DELIVERY_MAX_ATTEMPTS": "40",
            "LEADPUSH_DELIVERY_POLL_INTERVAL": "0.5",
            # A short lease, so a killed worker's deliveries come back soon; longer than a send may take.
            "LEADPUSH_DELIVERY_LEASE_SECONDS": "5",
            "LEADPUSH_SEND_TIMEOUT": "2",
            **{
                f"LEADPUSH_{k.upper()}": str(v)
                for k, v in channel_settings(self.fake.url, wecom_corpid=None).items()
                if v is not None
            },
        }
        if self.redis_url:
            self.env["LEADPUSH_REDIS_URL"] = self.redis_url
            self.env["LEADPUSH_REDIS_PREFIX"] = "lp-faults-" + uuid.uuid4().hex[:8]
        self.env.update(self.extra)

    def spawn(self, **roles: tuple[str, ...]) -> dict[str, LeadpushProcess]:
        """Start processes in parallel: spawn(api_a=("api",), worker_1=("worker",))."""
        new = {name: LeadpushProcess(self.env, r, self.log_dir, name) for name, r in roles.items()}
        self.procs.update(new)
        with ThreadPoolExecutor(len(new)) as pool:
            list(pool.map(lambda p: p.start(timeout=60), new.values()))
        return new

    def close(self) -> None:
        for proc in self.procs.values():
            proc.stop()
        self.ctx.db.dispose()

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{proc.log()[-1500:]}" for name, proc in self.procs.items())


def retrying_assign(
    urls: list[str], token: str, lead: int, to: int, failures: list[tuple[str, int | str, str]], budget: float = 60
) -> None:
    """A client behind a load balancer: on a 5xx or a connection error, try again (the next node)."""
    deadline = time.monotonic() + budget
    turn = lead
    while True:
        url = urls[turn % len(urls)]
        turn += 1
        try:
            r = httpx.patch(
                f"{url}/api/customers/{lead}/assign",
                json={"assignedTo": to},
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
        except httpx.HTTPError as exc:
            failures.append((url, type(exc).__name__, ""))
        else:
            if r.status_code == 200:
                return
            failures.append((url, r.status_code, r.text[:300]))
            assert r.status_code >= 500, r.text  # a 4xx would be a real refusal, never retried
        assert time.monotonic() < deadline, f"lead {lead} never assigned: {failures[-5:]}"
        time.sleep(0.1)


def check_once_everywhere(
    cluster: Cluster,
    leads: list[int],
    owners: dict[int, Seller],
    sockets: dict[int, WsCollector],
    resend_bound: int,
    timeout: float,
) -> dict[str, Any]:
    """Every notification delivered on every channel; in-app exactly once per socket; webhooks and WeChat
    messages at least once, re-sends (the mid-flight exception) at most `resend_bound` in all."""
    n = len(leads)
    counts = settle(cluster.ctx, {"inapp": n, "wechat": n, "webhook": n}, timeout=timeout)
    assert counts == {("inapp", "sent"): n, ("wechat", "sent"): n, ("webhook", "sent"): n}, (
        counts,
        cluster.fake.state.stats(),
        cluster.logs(),
    )
    deadline = time.monotonic() + 10
    while len(cluster.receiver.by_delivery) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    webhooks = Counter(cluster.receiver.by_delivery)
    assert len(webhooks) == n, len(webhooks)
    pages = pages_at_fake(cluster.fake)
    assert set(pages) == {PAGE.format(lead) for lead in leads}
    expected = Counter(owners[lead].id for lead in leads)
    for uid, ws in sockets.items():
        ids = ws.wait_for(expected[uid], timeout=20)
        assert len(ids) == len(set(ids)) == expected[uid], (uid, len(ids), len(set(ids)), expected[uid])
        assert ids == sorted(ids)
    resent = {"webhook": duplicates(webhooks), "wechat": duplicates(pages)}
    assert resent["webhook"] + resent["wechat"] <= resend_bound, resent
    return resent


# --------------------------------------------------------------------------------------
# 3. Redis stopped and restarted mid-burst
# --------------------------------------------------------------------------------------

REDIS_BURST = 90


def test_redis_restart_mid_burst_delivers_every_channel_once(tmp_path: Path) -> None:
    """Two api processes and a worker over PostgreSQL and a Redis of their own. Redis dies a third of
    the way through a burst and comes back two thirds in: in-app (whose fan-out rides on Redis),
    WeChat and webhooks all deliver every notification, and none twice."""
    private = PrivateRedis().start()
    with (
        postgres_database() as db_url,
        FakeWeChatServer(strict_state()) as fake,
        WebhookReceiver() as receiver,
    ):
        cluster = Cluster(db_url, fake, receiver, tmp_path, redis_url=private.url)
        try:
            procs = cluster.spawn(api_a=("api",), api_b=("api",), worker=("worker",))
            apis = [procs["api_a"].url, procs["api_b"].url]
            manager = make_user(cluster.ctx, "王经理", "manager")
            sellers = [make_user(cluster.ctx, f"销售{i}", wechat_openid=f"o-redis-{i}") for i in range(3)]
            for s in sellers:
                give_credits(cluster.ctx, fake, s, REDIS_BURST, REDIS_BURST)
            sockets = {s.id: WsCollector([apis[i % 2]], s.token) for i, s in enumerate(sellers)}
            leads = create_leads(apis[0], manager.token, REDIS_BURST)
            owners = {lead: sellers[i % len(sellers)] for i, lead in enumerate(leads)}
            failures: list[tuple[str, int | str, str]] = []
            ready_during: list[int] = []
            third = REDIS_BURST // 3
            for i, lead in enumerate(leads):
                if i == third:
                    private.stop()  # Redis goes away mid-burst...
                if third <= i < 2 * third:
                    time.sleep(0.05)  # ...for a couple of seconds of traffic...
                if i == third + 5:
                    ready_during = [httpx.get(f"{u}/readyz", timeout=10).status_code for u in apis]
                if i == 2 * third:
                    private.start()  # ...and comes back on the same port.
                retrying_assign([apis[i % 2]], manager.token, lead, owners[lead].id, failures)
            resent = check_once_everywhere(cluster, leads, owners, sockets, resend_bound=0, timeout=40)
            for ws in sockets.values():
                ws.close()
            # Every process says it is ready again (a check may still see a stale pooled connection once).
            ready_after: list[list[bool]] = []
            deadline = time.monotonic() + 15
            while not (ready_after and all(ready_after[-1])) and time.monotonic() < deadline:
                ready_after.append([httpx.get(f"{u}/readyz", timeout=10).status_code == 200 for u in apis])
                time.sleep(0.2)
            print(
                f"\nRedis restart: readyz during {ready_during}, after {ready_after}, "
                f"API failures {len(failures)}, re-sent {resent}"
            )
            assert failures == []  # the API does not need Redis to take assignments
            assert ready_during == [503, 503]
            assert all(ready_after[-1]), ready_after
        finally:
            cluster.close()
            private.stop()


# --------------------------------------------------------------------------------------
# 5. kill -9 of a worker and of an API process
# --------------------------------------------------------------------------------------

KILL_BURST = 160
KILL_CONCURRENCY = 8


def test_kill_9_of_a_worker_and_an_api_process_mid_burst(tmp_path: Path) -> None:
    """2 api + 2 workers over PostgreSQL and Redis. kill -9 one worker while webhooks are on the wire,
    then one api process while assignments and WebSockets use it. Clients retry on the other api and
    WebSockets reconnect to it, resuming after their last id. Every notification arrives on every
    channel; the only re-sends are what the dead worker had in flight (at most its concurrency)."""
    require_redis(REDIS_URL)
    with (
        postgres_database() as db_url,
        FakeWeChatServer(strict_state()) as fake,
        WebhookReceiver(delay=0.2) as receiver,
    ):
        cluster = Cluster(
            db_url,
            fake,
            receiver,
            tmp_path,
            redis_url=REDIS_URL,
            extra={"LEADPUSH_DELIVERY_CONCURRENCY": str(KILL_CONCURRENCY)},
        )
        try:
            procs = cluster.spawn(api_a=("api",), api_b=("api",), worker_1=("worker",), worker_2=("worker",))
            apis = [procs["api_a"].url, procs["api_b"].url]
            manager = make_user(cluster.ctx, "王经理", "manager")
            sellers = [make_user(cluster.ctx, f"销售{i}", wechat_openid=f"o-kill-{i}") for i in range(4)]
            for s in sellers:
                # The fake holds spare credits: a WeChat re-send after the kill spends one there.
                give_credits(cluster.ctx, fake, s, KILL_BURST, KILL_BURST + KILL_CONCURRENCY)
            # Half the sockets on the api process that will die; each fails over to the other one.
            sockets = {
                s.id: WsCollector(apis if i % 2 == 0 else apis[::-1], s.token, reconnect=True)
                for i, s in enumerate(sellers)
            }
            leads = create_leads(apis[1], manager.token, KILL_BURST)
            owners = {lead: sellers[i % len(sellers)] for i, lead in enumerate(leads)}
            failures: list[tuple[str, int | str, str]] = []
            done: list[int] = []
            kills: dict[str, int] = {}

            def killer() -> None:
                while receiver.accepted() < KILL_BURST // 5 and len(kills) < 2:
                    time.sleep(0.01)
                kills["worker_1 at webhooks"] = receiver.accepted()
                procs["worker_1"].kill9()
                while len(done) < KILL_BURST // 2:
                    time.sleep(0.01)
                kills["api_a at assignments"] = len(done)
                procs["api_a"].kill9()

            thread = threading.Thread(target=killer, daemon=True)
            thread.start()

            def one(lead: int) -> None:
                retrying_assign(apis, manager.token, lead, owners[lead].id, failures)
                done.append(lead)

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(one, leads))
            thread.join(timeout=30)
            assert len(kills) == 2, kills
            resent = check_once_everywhere(cluster, leads, owners, sockets, resend_bound=KILL_CONCURRENCY, timeout=60)
            reconnects = {uid: ws.connections for uid, ws in sockets.items()}
            for ws in sockets.values():
                ws.close()
            print(
                f"\nkill -9: {kills}; API failures {Counter(str(f[1]) for f in failures)}; "
                f"socket connections {reconnects}; re-sent {resent} (bound {KILL_CONCURRENCY})"
            )
            # The sockets that were on api_a moved to api_b.
            assert all(reconnects[s.id] >= 2 for i, s in enumerate(sellers) if i % 2 == 0), reconnects
        finally:
            cluster.close()


# --------------------------------------------------------------------------------------
# 4. PostgreSQL stopped (crashed) and restarted mid-burst
# --------------------------------------------------------------------------------------

PG_BURST = 150
PG_CONCURRENCY = 8
PG_OUTAGE = 3.0


def is_envelope(body: str) -> bool:
    import json

    try:
        data = json.loads(body)
    except ValueError:
        return False
    return (
        isinstance(data, dict)
        and data.get("success") is False
        and isinstance(data.get("message"), str)
        and isinstance(data.get("code"), str)
        and "Traceback" not in body
    )


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of our own, so these tests may crash it (never the machine's shared one)."""
    with PrivatePostgres() as pg:
        yield pg


def test_postgres_restart_mid_burst_recovers_and_delivers_every_accepted_assignment_once(
    tmp_path: Path, private_pg: PrivatePostgres
) -> None:
    """leadpush (all roles, the embedded default's process shape) on a private PostgreSQL that crashes
    (`pg_ctl stop -m immediate`) a third of the way through a burst and comes back 3 s later.

    Clients retry on 5xx and connection errors. During the outage the API answers 503
    `database_unavailable` in the JSON error envelope and /readyz says 503; afterwards it recovers by itself (/readyz 200) without a restart.
    Every assignment that was answered 200 is delivered in-app (once per socket), to WeChat and to the
    webhook; re-sends are bounded by the sends in flight when the database went away (a send whose
    outcome could not be recorded is the mid-flight exception)."""
    pg = private_pg
    with (
        FakeWeChatServer(strict_state()) as fake,
        WebhookReceiver(delay=0.05) as receiver,
    ):
        db_url = pg.create_database("leadpush_" + uuid.uuid4().hex[:8])
        cluster = Cluster(
            db_url, fake, receiver, tmp_path, extra={"LEADPUSH_DELIVERY_CONCURRENCY": str(PG_CONCURRENCY)}
        )
        try:
            node = cluster.spawn(node=())["node"]  # no --role: api + worker + scheduler in one process
            manager = make_user(cluster.ctx, "王经理", "manager")
            sellers = [make_user(cluster.ctx, f"销售{i}", wechat_openid=f"o-pg-{i}") for i in range(3)]
            for s in sellers:
                give_credits(cluster.ctx, fake, s, PG_BURST, PG_BURST + PG_CONCURRENCY)
            sockets = {s.id: WsCollector([node.url], s.token, reconnect=True) for s in sellers}
            leads = create_leads(node.url, manager.token, PG_BURST)
            owners = {lead: sellers[i % len(sellers)] for i, lead in enumerate(leads)}
            cluster.ctx.db.dispose()  # the test's own pool must not hold connections across the crash

            failures: list[tuple[str, int | str, str]] = []
            done: list[int] = []
            outage: dict[str, Any] = {}

            def saboteur() -> None:
                while len(done) < PG_BURST // 3:
                    time.sleep(0.01)
                pg.stop(mode="immediate")
                outage["down_at"] = time.monotonic()
                outage["assigned_before"] = len(done)
                ready = []
                while time.monotonic() - outage["down_at"] < PG_OUTAGE:
                    r = httpx.get(f"{node.url}/readyz", timeout=10)
                    ready.append(r.status_code)
                    time.sleep(0.3)
                outage["readyz_during"] = sorted(set(ready))
                pg.start()
                up = time.monotonic()
                while httpx.get(f"{node.url}/readyz", timeout=10).status_code != 200:
                    assert time.monotonic() - up < 30, "leadpush did not become ready again"
                    time.sleep(0.1)
                outage["ready_again_after"] = round(time.monotonic() - up, 2)

            thread = threading.Thread(target=saboteur, daemon=True)
            thread.start()

            def one(lead: int) -> None:
                retrying_assign([node.url], manager.token, lead, owners[lead].id, failures, budget=90)
                done.append(lead)

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(one, leads))
            thread.join(timeout=60)
            assert "ready_again_after" in outage, outage

            resent = check_once_everywhere(cluster, leads, owners, sockets, resend_bound=PG_CONCURRENCY, timeout=60)
            reconnects = {uid: ws.connections for uid, ws in sockets.items()}
            for ws in sockets.values():
                ws.close()
            kinds = Counter(str(status) for _, status, _ in failures)
            print(
                f"\nPostgreSQL crash: {outage}; API failures {dict(kinds)}; socket connections {reconnects}; "
                f"re-sent {resent} (bound {PG_CONCURRENCY})"
            )
            assert failures, "the outage must land mid-burst"
            assert outage["readyz_during"] == [503], outage
            # Every error answer during the outage is 503 database_unavailable in the JSON envelope.
            answered = [(status, body) for _, status, body in failures if isinstance(status, int)]
            assert all(status == 503 and is_envelope(body) for status, body in answered), answered[:5]
            assert all('"database_unavailable"' in body for _, body in answered), answered[:5]
        finally:
            cluster.close()


def api_app(server: Any) -> Any:
    return server.server.config.app


def test_api_answers_503_database_unavailable_while_postgres_is_down(private_pg: PrivatePostgres) -> None:
    """While the database is unreachable, requests fail fast with 503 `database_unavailable` (a client
    or load balancer retries those; a 500 would say "our bug"), in the JSON envelope; then it recovers."""
    url = private_pg.create_database("leadpush_" + uuid.uuid4().hex[:8])
    ctx, server = start_stack(url, roles=frozenset({"api"}), clock=SystemClock())
    try:
        manager = make_user(ctx, "王经理", "manager")
        seller = make_user(ctx, "李丽")
        [lead] = create_leads(server.url, manager.token, 1)
        ctx.db.engine.dispose()
        private_pg.stop(mode="immediate")
        try:
            # One connection per request: after an unhandled exception uvicorn closes a kept-alive one.
            auth = {"Authorization": f"Bearer {manager.token}"}
            answers = [
                httpx.patch(f"{server.url}/api/customers/{lead}/assign", json={"assignedTo": seller.id}, headers=auth),
                httpx.get(f"{server.url}/api/customers", headers=auth),
                httpx.get(f"{server.url}/api/notifications", params={"after": 0}, headers=auth),
            ]
        finally:
            private_pg.start()
        assert all(is_envelope(r.text) for r in answers), [r.text for r in answers]
        assert [(r.status_code, r.json()["code"]) for r in answers] == [(503, "database_unavailable")] * 3
        private_pg.wait_ready()
        r = httpx.get(f"{server.url}/api/customers", headers=auth)
        assert r.status_code == 200, r.text  # recovered by itself, no restart
    finally:
        server.stop()
        ctx.db.dispose()


def test_websocket_keeps_delivering_after_a_redis_resync_during_a_postgres_outage(
    private_pg: PrivatePostgres,
) -> None:
    """A network blip takes both PostgreSQL and Redis away from an api node. When Redis comes back the
    node asks every socket to re-read the ledger; that read fails, the database is still down. Once it
    is back, a passive client (a phone that only listens) must get its next notification, either on
    the same socket or because the server closed it and the client resumed on a new one."""
    private = PrivateRedis().start()
    url = private_pg.create_database("leadpush_" + uuid.uuid4().hex[:8])
    ctx, server = start_stack(
        url,
        roles=frozenset({"api", "worker"}),
        clock=SystemClock(),
        redis_url=private.url,
        delivery_poll_interval=0.5,
    )
    try:
        bus = api_app(server).state.runtime.bus
        manager = make_user(ctx, "王经理", "manager")
        seller = make_user(ctx, "李丽")
        first, second = create_leads(server.url, manager.token, 2)
        ws = WsCollector([server.url], seller.token, reconnect=True)
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {manager.token}"}) as http:
            assert http.patch(f"/api/customers/{first}/assign", json={"assignedTo": seller.id}).status_code == 200
            assert len(ws.wait_for(1, timeout=10)) == 1
            ctx.db.engine.dispose()
            private_pg.stop(mode="immediate")
            try:
                private.stop()
                deadline = time.monotonic() + 10
                while bus.connected.is_set() and time.monotonic() < deadline:
                    time.sleep(0.05)
                private.start()
                while not bus.connected.is_set() and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert bus.connected.is_set(), "the Redis listener did not reconnect"
                time.sleep(0.5)  # the resync's catch-up read meets the dead database
            finally:
                private_pg.start()
            assert http.patch(f"/api/customers/{second}/assign", json={"assignedTo": seller.id}).status_code == 200
        ids = ws.wait_for(2, timeout=10)
        ws.close()
        assert len(ids) == 2, (ids, ws.connections)
    finally:
        server.stop()
        ctx.db.dispose()
        private.stop()


# Long enough for PostgreSQL's restart and the worker's reconnect on a loaded machine (a re-send after
# the lease ran out is the documented bound, not the case under test); short enough to wait out below.
LEASE = 12


def test_a_send_accepted_while_postgres_is_down_is_not_sent_again(private_pg: PrivatePostgres) -> None:
    """The database goes away while a WeChat send is on the wire; WeChat accepts it (errcode 0), so
    leadpush *saw* the answer. That is not the mid-flight exception: the worker should hold on to the
    result until it can record it (its lease allows), not send the message a second time."""
    url = private_pg.create_database("leadpush_" + uuid.uuid4().hex[:8])
    with FakeWeChatServer(strict_state()) as fake:
        ctx, server = start_stack(
            url,
            roles=frozenset({"api", "worker"}),
            clock=SystemClock(),
            **channel_settings(
                fake.url,
                wecom_corpid=None,
                send_timeout=2,
                delivery_lease_seconds=LEASE,
                delivery_backoff_base=0.1,
                delivery_poll_interval=0.2,
            ),
        )
        try:
            manager = make_user(ctx, "王经理", "manager")
            seller = make_user(ctx, "李丽", wechat_openid="o-settle")
            give_credits(ctx, fake, seller, 1, 2)  # a second credit at WeChat, so a re-send shows
            [lead] = create_leads(server.url, manager.token, 1)
            fake.state.add_fault(SUBSCRIBE_PATH, "slow", delay=1.0, count=1)  # answers after 1 s
            r = httpx.patch(
                f"{server.url}/api/customers/{lead}/assign",
                json={"assignedTo": seller.id},
                headers={"Authorization": f"Bearer {manager.token}"},
            )
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 10
            while not fake.state.stats()["faults_fired"].get("slow") and time.monotonic() < deadline:
                time.sleep(0.01)
            claimed = time.monotonic()
            ctx.db.engine.dispose()
            private_pg.stop(mode="immediate")  # the send is on the wire...
            try:
                while not fake.state.get_messages("subscribe") and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert len(fake.state.get_messages("subscribe")) == 1  # ...and WeChat accepted it
                time.sleep(1.0)
            finally:
                private_pg.start()
            counts = settle(ctx, {"wechat": 1, "inapp": 1}, timeout=20)
            time.sleep(max(0.0, claimed + LEASE + 1.5 - time.monotonic()))  # past the lease: a re-send shows
            assert counts.get(("wechat", "sent")) == 1, counts
            assert len(fake.state.get_messages("subscribe")) == 1, fake.state.get_messages("subscribe")
        finally:
            server.stop()
            ctx.db.dispose()
