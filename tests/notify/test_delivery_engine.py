"""The dispatcher: webhook deliveries that retry, die, get retried by an admin; leases; metrics."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update
from support import DATABASES, Api, running_stack, wait_for, wipe
from support.procs import ROOT
from support.receiver import WebhookReceiver

from leadpush.notify.dispatcher import backoff_seconds, claim_due_deliveries
from leadpush.notify.models import Delivery, Worker
from leadpush.notify.workers import Heartbeat

SECRET = "whsec-test-0123456789"


@pytest.fixture(params=DATABASES)
def hooked(request, tmp_path) -> Iterator[tuple[Api, WebhookReceiver]]:
    """A leadpush whose webhook channel points at a real receiver."""
    with (
        WebhookReceiver() as receiver,
        running_stack(
            request.param,
            str(tmp_path),
            webhook_url=receiver.url,
            webhook_secret=SECRET,
            delivery_max_attempts=3,
            delivery_poll_interval=0.2,
        ) as (ctx, server),
    ):
        wipe(ctx)
        api = Api(url=server.url, ctx=ctx)
        try:
            yield api, receiver
        finally:
            api.close()


def deliveries(api: Api, who, **params) -> list[dict]:
    return api.client(who).get("/api/deliveries", params=params).json()["data"]["items"]


def setup_assignment(api: Api):
    admin = api.user("管理员", "admin", None)
    manager = api.user("王经理", "manager", "A")
    alice = api.user("李丽", "sales", "A")
    lead = api.lead(manager, name="张三")
    r = api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": alice.id})
    assert r.status_code == 200
    return admin, manager, alice, lead


def test_webhook_arrives_signed_with_an_idempotency_key(hooked):
    api, receiver = hooked
    _, _, alice, lead = setup_assignment(api)
    wait_for(lambda: receiver.accepted() == 1)
    request = receiver.requests[0]
    body = request["body"]
    timestamp = request["headers"]["x-leadpush-timestamp"]
    expected = "sha256=" + hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request["headers"]["x-leadpush-signature"], expected)
    payload = json.loads(body)
    assert payload["recipient"]["id"] == alice.id
    assert payload["notification"]["type"] == "customer_assigned"
    assert payload["notification"]["data"]["customerId"] == lead["id"]
    assert request["headers"]["x-leadpush-delivery"] == str(payload["deliveryId"])


def test_a_notice_about_your_own_action_is_sent_as_read_on_every_channel(hooked):
    """A claim is born read in the ledger; the in-app push and the webhook built from the delivery say so too.

    (The page takes whichever in-app push arrives first — the ledger read's or the delivery's — and pops
    up a toast for one without `readAt`; the webhook is the same message, seen here from outside.)"""
    api, receiver = hooked
    _, manager, alice, _ = setup_assignment(api)
    wait_for(lambda: receiver.accepted() == 1)
    lead = api.lead(manager, name="黄蓉")
    assert api.client(alice).post(f"/api/customers/{lead['id']}/claim").status_code == 200
    wait_for(lambda: receiver.accepted() == 2)
    first, claimed = (json.loads(r["body"])["notification"] for r in receiver.requests[:2])
    assert first["data"]["customerName"] == "张三" and first["readAt"] is None  # news: unread
    assert claimed["data"]["customerName"] == "黄蓉"
    [stored] = [
        n for n in api.client(alice).get("/api/notifications").json()["data"]["items"] if n["id"] == claimed["id"]
    ]
    assert stored["readAt"] is not None and claimed["readAt"] == stored["readAt"]


def test_transient_failures_retry_with_backoff_then_succeed(hooked):
    api, receiver = hooked
    receiver.fail_with = [503, 500]
    admin, *_ = setup_assignment(api)
    wait_for(lambda: len(receiver.requests) == 1)
    [row] = wait_for(lambda: [d for d in deliveries(api, admin, channel="webhook") if d["status"] == "failed"])
    assert row["attempts"] == 1 and "503" in row["lastError"]
    api.nudge(seconds=3600)
    wait_for(lambda: len(receiver.requests) == 2)
    # The second failure recorded (its retry planned from the clock as it is) before the clock moves again:
    # moved first, the retry would be planned an hour past the move, and never come.
    wait_for(
        lambda: [d for d in deliveries(api, admin, channel="webhook") if d["status"] == "failed" and d["attempts"] == 2]
    )
    api.nudge(seconds=3600)
    [row] = wait_for(lambda: [d for d in deliveries(api, admin, channel="webhook") if d["status"] == "sent"])
    assert row["attempts"] == 3
    assert receiver.accepted() == 1


def test_permanent_rejection_is_dead_at_once_and_an_admin_can_retry_it(hooked):
    api, receiver = hooked
    receiver.fail_with = [400]
    admin, manager, alice, _ = setup_assignment(api)
    [dead] = wait_for(lambda: deliveries(api, admin, status="dead"))
    assert dead["channel"] == "webhook" and "400" in dead["lastError"] and dead["attempts"] == 1

    # Only admins may retry; sales may not even look.
    assert api.client(manager).post(f"/api/deliveries/{dead['id']}/retry").status_code == 403
    assert api.client(alice).get("/api/deliveries").status_code == 403
    r = api.client(admin).post(f"/api/deliveries/{dead['id']}/retry")
    assert r.status_code == 200 and r.json()["data"]["status"] == "pending"
    wait_for(lambda: receiver.accepted() == 1)
    [row] = wait_for(lambda: [d for d in deliveries(api, admin, channel="webhook") if d["status"] == "sent"])
    assert row["id"] == dead["id"]
    # A sent delivery cannot be "retried" into a duplicate.
    again = api.client(admin).post(f"/api/deliveries/{dead['id']}/retry")
    assert again.status_code == 409 and again.json()["code"] == "not_retryable"
    assert api.client(admin).post("/api/deliveries/999999/retry").json()["code"] == "delivery_not_found"


def test_exhausted_attempts_become_dead_with_the_reason(hooked):
    api, receiver = hooked
    receiver.always = 502
    admin, *_ = setup_assignment(api)
    for expected in (1, 2):
        # The failure is recorded (its retry time set) before the clock moves past it: under load the outcome
        # can land after the receiver saw the request, and a retry time set after the jump would never come.
        wait_for(
            lambda expected=expected: any(d["attempts"] == expected for d in deliveries(api, admin, status="failed"))
        )
        assert len(receiver.requests) == expected
        api.nudge(seconds=3600)
    [dead] = wait_for(lambda: deliveries(api, admin, status="dead"))
    assert dead["attempts"] == 3 and "502" in dead["lastError"] and "3" in dead["lastError"]


@pytest.mark.slow  # waits out a lease
def test_a_delivery_held_by_a_crashed_worker_is_taken_again_after_its_lease(hooked):
    api, receiver = hooked
    receiver.always = 503  # keep it from completing first
    admin, *_ = setup_assignment(api)
    wait_for(lambda: len(receiver.requests) >= 1)
    receiver.always = None
    now = api.ctx.clock.now()
    with api.ctx.db.write() as s:  # as a worker that died mid-send would leave it
        s.execute(
            update(Delivery)
            .where(Delivery.channel == "webhook")
            .values(status="sending", lease_until=now + timedelta(seconds=60))
        )
    api.nudge(seconds=1)
    time.sleep(0.3)
    assert receiver.accepted() == 0  # lease still held
    api.nudge(seconds=120)
    wait_for(lambda: receiver.accepted() == 1)


@pytest.mark.slow  # long concurrency
def test_two_claimers_never_take_the_same_delivery(api, team):
    lead_ids = [api.lead(team.manager, name=f"客户{i}")["id"] for i in range(30)]
    # Stop this stack's own worker from interfering: make everything due in the future first.
    m = api.client(team.manager)
    for lid in lead_ids:
        assert m.patch(f"/api/customers/{lid}/assign", json={"assignedTo": team.bob.id}).status_code == 200
    future = api.ctx.clock.now() + timedelta(days=1)
    with api.ctx.db.write() as s:
        s.execute(update(Delivery).values(status="pending", next_attempt_at=future, lease_until=None))
    when = future + timedelta(seconds=1)
    with ThreadPoolExecutor(4) as pool:
        batches = list(pool.map(lambda _: claim_due_deliveries(api.ctx.db, when, 60, 10), range(4)))
    claimed = [job.delivery_id for batch in batches for job in batch]
    assert len(claimed) == len(set(claimed)) == 30
    with api.ctx.db.read() as s:
        assert set(s.scalars(select(Delivery.status))) == {"sending"}


def test_backoff_grows_exponentially_with_jitter_and_respects_retry_after():
    import random

    rng = random.Random(7)
    delays = [backoff_seconds(n, 2.0, 600.0, rng=rng) for n in range(1, 12)]
    for n, d in enumerate(delays, start=1):
        raw = min(600.0, 2.0 * 2 ** (n - 1))
        assert raw / 2 <= d <= raw
    assert backoff_seconds(1, 2.0, 600.0, retry_after=3600, rng=rng) == 3600


def test_metrics_and_health(hooked):
    api, receiver = hooked
    setup_assignment(api)
    wait_for(lambda: receiver.accepted() == 1)
    c = httpx.Client(base_url=api.url)

    def scraped() -> str | None:
        text = c.get("/metrics").text
        # A sent in-app delivery is recorded (and counted) by the worker's next claim, within 0.2 s.
        recorded = (
            'leadpush_deliveries_total{channel="webhook",status="sent"}',
            'leadpush_send_seconds_count{channel="inapp"}',
        )
        return text if all(name in text for name in recorded) else None

    text = wait_for(scraped)
    assert 'leadpush_deliveries_total{channel="webhook",status="sent"} 1.0' in text
    assert 'leadpush_send_seconds_count{channel="inapp"}' in text
    assert "leadpush_oldest_pending_seconds" in text and "leadpush_websocket_clients 0.0" in text
    assert c.get("/healthz").json()["status"] == "ok"
    ready = c.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": True}
    c.close()


def test_a_lease_shorter_than_a_send_is_refused_at_start():
    from pydantic import ValidationError

    from leadpush.config import Settings

    with pytest.raises(ValidationError, match="LEASE_SECONDS"):
        Settings(delivery_lease_seconds=5, send_timeout=10)
    assert Settings(delivery_lease_seconds=12, send_timeout=10).delivery_lease_seconds == 12


# Retry-After values a webhook receiver might answer with, and how long leadpush then waits.
HOSTILE_RETRY_AFTER = [
    ("999999999", "cap"),  # 31 years: capped at the backoff maximum
    ("400000000000", "cap"),  # past what a datetime can hold: capped, not taken for a database blip
    ("30", 30.0),  # an honest value is honoured
    ("soon", "backoff"),  # unparseable: ignored, normal backoff
    ("-5", "backoff"),
    ("nan", "backoff"),
    ("inf", "backoff"),
    ("1.5e9", "backoff"),
    ("Wed, 21 Oct 2015 07:28:00 GMT", "backoff"),  # an HTTP-date in the past
]


@pytest.mark.slow  # waits out retries
def test_a_webhooks_retry_after_is_capped_and_garbage_is_ignored(hooked):
    api, receiver = hooked
    cap = api.ctx.settings.delivery_backoff_max
    receiver.always = 503
    receiver.retry_after = [value for value, _ in HOSTILE_RETRY_AFTER]
    admin = api.user("管理员", "admin", None)
    manager = api.user("王经理", "manager", "A")
    alice = api.user("李丽", "sales", "A")
    for i, _ in enumerate(HOSTILE_RETRY_AFTER):
        lead = api.lead(manager, name=f"客户{i}")
        r = api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": alice.id})
        assert r.status_code == 200
        # One at a time, so the n-th request (and its Retry-After) belongs to the n-th delivery.
        wait_for(lambda n=i + 1: len(deliveries(api, admin, channel="webhook", status="failed")) == n)
    now = api.ctx.clock.now()
    with api.ctx.db.read() as s:
        rows = {str(d.id): d for d in s.scalars(select(Delivery).where(Delivery.channel == "webhook"))}
    seen = {r["headers"]["x-leadpush-delivery"]: r["retry_after"] for r in receiver.requests}
    assert len(seen) == len(HOSTILE_RETRY_AFTER)
    expected = dict(HOSTILE_RETRY_AFTER)
    for delivery_id, value in seen.items():
        row = rows[delivery_id]
        assert row.status == "failed" and row.attempts == 1 and "503" in row.last_error, (value, row.last_error)
        wait = (row.next_attempt_at - now).total_seconds()
        want = expected[value]
        if want == "cap":
            assert wait == pytest.approx(cap, abs=1), (value, wait)
        elif want == "backoff":
            assert 0 < wait <= api.ctx.settings.delivery_backoff_base, (value, wait)
        else:
            assert wait == pytest.approx(want, abs=1), (value, wait)
    # Nothing was taken for a blip and re-sent: one request per delivery.
    assert len(receiver.requests) == len(HOSTILE_RETRY_AFTER)


@pytest.mark.slow  # `leadpush serve` as a subprocess
def test_a_webhook_without_a_secret_is_refused_at_start(tmp_path):
    from pydantic import ValidationError

    from leadpush.config import Settings

    with pytest.raises(ValidationError, match="LEADPUSH_WEBHOOK_SECRET"):
        Settings(webhook_url="https://hooks.example.com/x")
    with pytest.raises(ValidationError, match="LEADPUSH_WEBHOOK_SECRET"):
        Settings(webhook_url="https://hooks.example.com/x", webhook_secret="   ")
    assert Settings(webhook_url="https://hooks.example.com/x", webhook_secret="whsec-x").webhook_enabled
    assert not Settings().webhook_enabled  # no URL, no secret needed

    # `leadpush serve` refuses to start, saying why, instead of signing with an empty key.
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "LEADPUSH_DATABASE_URL": f"sqlite:///{tmp_path}/nosecret.db",
        "LEADPUSH_WEBHOOK_URL": "https://hooks.example.com/x",
        "LEADPUSH_WEBHOOK_SECRET": "",
    }
    done = subprocess.run(
        [sys.executable, "-m", "leadpush.cli", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode != 0
    assert "LEADPUSH_WEBHOOK_SECRET" in done.stdout + done.stderr
    assert "签名" in done.stdout + done.stderr


@pytest.mark.slow  # waits out a heartbeat
def test_a_worker_whose_heartbeat_stops_is_judged_dead_and_its_claims_taken_over(api):
    """A killed worker leaves its row with a counter that no longer moves; a live one keeps beating.
    Only the first is judged dead (after DEAD_AFTER_SECONDS of watching), and only its
    `sending` deliveries may be claimed before their lease runs out."""
    ctx = api.ctx
    admin, manager, alice = api.user("管理员", "admin", None), api.user("王经理", "manager", "A"), api.user("李丽")
    for name in ("甲", "乙"):
        lead = api.lead(manager, name=name)
        r = api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": alice.id})
        assert r.status_code == 200
    with ctx.db.read() as s:
        ids = sorted(s.scalars(select(Delivery.id)))
    assert len(ids) == 2
    wait_for(lambda: [d["status"] for d in deliveries(api, admin)] == ["sent"] * 2)

    now = ctx.clock.now()
    with ctx.db.write() as s:
        s.add(Worker(id="killed", host="h", pid=1, beats=41, started_at=now, heartbeat_at=now))
    live = Heartbeat(ctx.db, ctx.clock, sole_worker=False, interval=0.1, dead_after=0.6)
    watcher = Heartbeat(ctx.db, ctx.clock, sole_worker=False, interval=0.1, dead_after=0.6)
    live.start()
    watcher.start()
    try:
        started = time.monotonic()
        assert watcher.dead_workers() == frozenset()  # nobody is judged before being watched
        wait_for(lambda: "killed" in watcher.dead_workers(), timeout=10)
        assert time.monotonic() - started >= 0.6
        assert live.id not in watcher.dead_workers() and watcher.id not in live.dead_workers()

        # Both deliveries under a long lease: one held by the dead worker, one by the live one.
        with ctx.db.write() as s:
            for delivery_id, holder in zip(ids, ("killed", live.id), strict=True):
                s.execute(
                    update(Delivery)
                    .where(Delivery.id == delivery_id)
                    .values(
                        status="sending",
                        attempts=Delivery.attempts + 1,
                        lease_until=now + timedelta(seconds=600),
                        lease_holder=holder,
                    )
                )
        assert claim_due_deliveries(ctx.db, now, 60, 10, watcher.id) == []  # by the lease alone: nothing
        [job] = claim_due_deliveries(ctx.db, now, 60, 10, watcher.id, watcher.dead_workers())
        assert job.delivery_id == ids[0] and job.lease_holder == watcher.id
    finally:
        live.stop()
        watcher.stop()
