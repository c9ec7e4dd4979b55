"""kill -9 in the middle of delivering: nothing committed is lost, nothing is delivered twice in-app.

The webhook receiver counts what it accepts by delivery id. A webhook send that was on the wire when
the process died cannot be known to have arrived, so it is sent again after the lease: that is the
documented, bounded exception (at most one re-send per delivery in flight, never more than the
dispatcher's concurrency). The test measures it and holds it to that bound.
"""

from __future__ import annotations

import time

import httpx
from procs import LeadpushProcess
from receiver import WebhookReceiver
from sqlalchemy import func, select
from wsclient import WsClient

from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.migrate import upgrade
from leadpush.notify.models import Delivery
from leadpush.users.service import create_user

ASSIGNMENTS = 200
CONCURRENCY = 8


def sent_count(ctx: AppContext) -> int:
    with ctx.db.read() as s:
        return s.scalar(select(func.count()).select_from(Delivery).where(Delivery.status == "sent")) or 0


def test_kill_9_mid_delivery_then_restart_delivers_everything(tmp_path):
    db_url = f"sqlite:///{tmp_path}/kill9.db"
    upgrade(db_url)
    ctx = AppContext.from_settings(Settings(database_url=db_url))
    with ctx.db.write() as s:
        manager_user, manager = create_user(s, name="王经理", role="manager", team="A")
        alice_user, alice = create_user(s, name="李丽", role="sales", team="A")
        alice_id = alice_user.id

    with WebhookReceiver(delay=0.2) as receiver:
        env = {
            "LEADPUSH_DATABASE_URL": db_url,
            "LEADPUSH_WEBHOOK_URL": receiver.url,
            "LEADPUSH_WEBHOOK_SECRET": "s3cret-kill9",
            "LEADPUSH_DELIVERY_LEASE_SECONDS": "2",
            "LEADPUSH_SEND_TIMEOUT": "0.5",
            "LEADPUSH_DELIVERY_CONCURRENCY": str(CONCURRENCY),
            "LEADPUSH_DELIVERY_POLL_INTERVAL": "0.5",
            "LEADPUSH_LOG_LEVEL": "WARNING",
        }
        node = LeadpushProcess(env, (), tmp_path, "kill9").start()
        headers = {"Authorization": f"Bearer {manager}"}
        with httpx.Client(base_url=node.url, headers=headers, timeout=30) as http:
            r = http.post(
                "/api/customers",
                json=[{"name": f"客户{i}", "phone": f"1390000{i:04d}"} for i in range(ASSIGNMENTS)],
            )
            lead_ids = [c["id"] for c in r.json()["data"]["customers"]]
            ws = WsClient(node.url, alice, resume=0)
            for lead in lead_ids:
                assert http.patch(f"/api/customers/{lead}/assign", json={"assignedTo": alice_id}).status_code == 200

        # Kill it while webhooks are still on the wire.
        deadline = time.monotonic() + 30
        while receiver.accepted() < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        node.kill9()
        before = receiver.accepted()
        assert 0 < before < ASSIGNMENTS, "the kill must land mid-delivery"
        seen_before = ws.drain(0.3)
        ws.close()

        node = LeadpushProcess(env, (), tmp_path, "kill9-restarted").start()
        try:
            last_seen = max((m["id"] for m in seen_before), default=0)
            ws = WsClient(node.url, alice, resume=last_seen)
            deadline = time.monotonic() + 60
            while len(receiver.by_delivery) < ASSIGNMENTS and time.monotonic() < deadline:
                time.sleep(0.1)
            in_app = ws.notifications(ASSIGNMENTS - len(seen_before), timeout=20)
            ws.close()
            while sent_count(ctx) < 2 * ASSIGNMENTS and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            node.stop()

    # Every committed notification arrived, in-app exactly once, in order.
    all_ids = [m["id"] for m in seen_before + in_app]
    assert len(all_ids) == len(set(all_ids)) == ASSIGNMENTS
    assert all_ids == sorted(all_ids)
    # Every webhook delivery arrived; re-sends are bounded by what was in flight at the kill.
    assert len(receiver.by_delivery) == ASSIGNMENTS
    duplicates = sum(count - 1 for count in receiver.by_delivery.values())
    assert duplicates <= CONCURRENCY, receiver.by_delivery.most_common(5)
    with ctx.db.read() as s:
        statuses = dict(s.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all())
    assert statuses == {"sent": 2 * ASSIGNMENTS}, statuses
    ctx.db.dispose()
    print(f"kill -9 after {before} webhooks; {duplicates} re-sent after restart (bound {CONCURRENCY})")
