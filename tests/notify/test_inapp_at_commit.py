"""In-app is delivered by the commit that wrote it: the api process that commits a notification pushes it
to its recipient's sockets at once (and to the other api processes in its hint message), so its in-app
delivery row is written as sent with it, and the worker has nothing to claim for it (issue 17: at one
client the worker's claim transaction per assignment was the largest share of the CPU).

A process that writes notifications without pushing them (`leadpush transfer run`, a script) leaves the
in-app rows pending, for the worker to publish as before: the worker stays the in-app safety net.
"""

from __future__ import annotations

import asyncio
import threading
import uuid

import httpx
import pytest
import redis
from support import DATABASES, REDIS_URL, Api, ok, require_redis, running_stack, wait_for
from support.wsclient import WsClient

from leadpush.assignment.actions import assign_one
from leadpush.context import AppContext
from leadpush.notify.bus import RedisBus
from leadpush.users.models import User

API_ONLY = frozenset({"api", "scheduler"})


@pytest.fixture(params=DATABASES)
def api_only(request, tmp_path):
    """leadpush with no worker at all: only what the committing api process does itself happens."""
    with running_stack(request.param, str(tmp_path), roles=API_ONLY) as (ctx, server):
        a = Api(url=server.url, ctx=ctx)
        try:
            yield a
        finally:
            a.close()


def _people(api: Api):
    admin = api.user("管理员", "admin", None)
    manager = api.user("王经理", "manager", "A")
    alice = api.user("李丽", "sales", "A")
    return admin, manager, alice


def test_inappcommit_an_assignment_reaches_the_socket_and_reads_sent_with_no_worker_running(api_only):
    api = api_only
    admin, manager, alice = _people(api)
    ws = WsClient(api.url, alice.token, resume=0)
    ws.next_of("unread")
    lead = api.lead(manager, name="张三", phone="13800138000")
    ok(api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": alice.id}))
    [pushed] = ws.notifications(1)
    assert pushed["type"] == "customer_assigned" and pushed["data"]["customerName"] == "张三"
    ws.close()
    # Read at once, with no worker anywhere: the ledger already says the in-app delivery was sent, once.
    rows = ok(api.client(admin).get("/api/deliveries", params={"channel": "inapp"}))["items"]
    mine = [d for d in rows if d["notificationId"] == pushed["id"]]
    assert [(d["channel"], d["status"], d["attempts"]) for d in mine] == [("inapp", "sent", 1)]
    tries = ok(api.client(admin).get(f"/api/deliveries/{mine[0]['id']}"))["attempts"]
    assert [(t["attempt"], t["outcome"], t["status"]) for t in tries] == [(1, "sent", "sent")]
    # ... and /metrics counts it as the worker would have.
    text = httpx.get(api.url + "/metrics").text
    assert 'leadpush_deliveries_total{channel="inapp",status="sent"}' in text


def test_inappcommit_a_notification_written_by_a_process_that_does_not_push_waits_for_the_worker(api, team):
    # Another process on the same database with no runtime (as `leadpush transfer run` is): nothing pushes.
    other = AppContext.from_settings(api.ctx.settings, clock=api.ctx.clock)
    try:
        ws = WsClient(api.url, team.alice.token, resume=0)
        ws.next_of("unread")
        lead = api.lead(team.manager, name="李四", phone="13800138001")
        with other.db.write() as session:
            manager = session.get_one(User, team.manager.id)
            assign_one(other, session, manager, lead["id"], team.alice.id, via="web")
        # The running stack's worker publishes it (the in-app row was written pending), woken as by its poll.
        api.ctx.signals.notifications_committed(set())
        [pushed] = ws.notifications(1)
        assert pushed["data"]["customerName"] == "李四"
        ws.close()
        rows = wait_for(
            lambda: [
                (d["status"], d["attempts"])
                for d in ok(api.client(team.admin).get("/api/deliveries", params={"notificationId": pushed["id"]}))[
                    "items"
                ]
                if d["channel"] == "inapp" and d["status"] == "sent"
            ]
        )
        assert rows == [("sent", 1)]
    finally:
        other.db.dispose()


class _Listener:
    """Another api process's bus, in a thread of its own: what it is offered, per user."""

    def __init__(self, prefix: str) -> None:
        self.heard: list[int] = []
        self.bus = RedisBus(REDIS_URL, prefix)
        self.bus.on_inapp(lambda uid, _message: self.heard.append(uid))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(15)

    async def _start(self) -> None:
        await self.bus.start()
        await asyncio.wait_for(self.bus.connected.wait(), 10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.bus.stop(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_inappcommit_a_hint_redis_refused_is_sent_again_until_it_goes(tmp_path):
    """The committing process's Redis refuses its PUBLISH (an ACL here; a broken connection in life) while the
    other process stays connected: the commit's push is the in-app delivery, so the hint is sent again."""
    require_redis(REDIS_URL)
    admin = redis.Redis.from_url(REDIS_URL)
    name, password = f"lp-nopub-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin.acl_setuser(
        name, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"], commands=["+@all", "-publish"]
    )
    prefix = f"lp-test-{uuid.uuid4().hex[:8]}"
    refused_url = REDIS_URL.replace("redis://", f"redis://{name}:{password}@", 1)
    listener = _Listener(prefix)
    try:
        with running_stack("sqlite", str(tmp_path), redis_url=refused_url, redis_prefix=prefix) as (ctx, server):
            api = Api(url=server.url, ctx=ctx)
            manager = api.user("王经理", "manager", "A")
            alice = api.user("李丽", "sales", "A")
            lead = api.lead(manager, name="张三")
            ok(api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": alice.id}))
            assert alice.id not in listener.heard
            admin.acl_setuser(name, enabled=True, commands=["+publish"])  # Redis takes it again
            wait_for(lambda: alice.id in listener.heard, timeout=20)
            api.close()
    finally:
        listener.close()
        admin.acl_deluser(name)
        admin.close()
