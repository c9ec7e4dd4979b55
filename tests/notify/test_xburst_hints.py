"""A commit's hint message goes to Redis from a thread of its own (runtime.HintThread), not after turns of the
committing process's event loop (issue 17, the cross-process burst: with 2,000 sockets the hint reached Redis
up to ~400 ms after the response, behind a loop that also parses and answers the burst's requests). Here the
committing process's loop is held busy: the other api processes hear of the commit anyway, in commit order,
nothing lost; and a hint Redis refuses is still sent again by the loop (test_inapp_at_commit.py)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from support import REDIS_URL, Api, ok, require_redis, running_stack

from leadpush.assignment.actions import assign_one
from leadpush.users.models import User


@pytest.fixture
def hinted(tmp_path) -> Iterator[tuple[Api, Any, Any]]:
    """A stack on Redis (its own prefix), its runtime, and a subscriber to its hint channel (as another api
    process)."""
    require_redis(REDIS_URL)
    prefix = f"lp-xburst-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(REDIS_URL)
    sub = client.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(f"{prefix}:hints")
    while sub.get_message(timeout=1) is None and not sub.subscribed:
        pass
    try:
        with running_stack("sqlite", str(tmp_path), redis_url=REDIS_URL, redis_prefix=prefix) as (ctx, server):
            api = Api(url=server.url, ctx=ctx)
            try:
                yield api, server.server.config.app.state.runtime, sub
            finally:
                api.close()
    finally:
        sub.close()
        client.close()


def _hold_loop(runtime: Any) -> threading.Event:
    """Block `runtime`'s event loop until the returned event is set."""
    busy, release = threading.Event(), threading.Event()

    def hold() -> None:
        busy.set()
        release.wait(30)

    runtime._loop.call_soon_threadsafe(hold)
    assert busy.wait(10)
    return release


def _heard(sub: Any, want: int, timeout: float = 10) -> list[tuple[int, dict[str, Any]]]:
    """The notifications the hint messages carried, in the order heard, until `want` of them (or the timeout)."""
    out: list[tuple[int, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        msg = sub.get_message(timeout=0.2)
        if msg is not None:
            out += [(int(uid), m) for uid, m in json.loads(msg["data"]).get("messages") or ()]
    return out


def _assign_in_thread(api: Api, manager_id: int, leads: list[int], to: int) -> None:
    """The assignments, each committed in this thread (as a request thread commits)."""
    for lead in leads:
        with api.ctx.db.write() as session:
            assign_one(api.ctx, session, session.get_one(User, manager_id), lead, to, via="web")


def test_xburst_a_commits_hint_reaches_redis_while_the_committing_loop_is_busy(hinted):
    api, runtime, sub = hinted
    manager, alice = api.user("王经理", "manager", "A"), api.user("李丽", "sales", "A")
    lead = api.lead(manager, name="张三", phone="13800138000")
    release = _hold_loop(runtime)
    try:
        _assign_in_thread(api, manager.id, [lead["id"]], alice.id)
        [(uid, message)] = _heard(sub, 1)  # while the loop is still held
    finally:
        release.set()
    assert uid == alice.id
    assert message["type"] == "customer_assigned" and message["data"]["customerId"] == lead["id"]


def test_xburst_many_commits_while_the_loop_is_busy_are_all_heard_in_commit_order(hinted):
    api, runtime, sub = hinted
    manager, alice, bob = (
        api.user("王经理", "manager", "A"),
        api.user("李丽", "sales", "A"),
        api.user("赵强", "sales", "A"),
    )
    leads = {who.id: [api.lead(manager, name=f"客户{i}")["id"] for i in range(15)] for who in (alice, bob)}
    release = _hold_loop(runtime)
    try:
        threads = [
            threading.Thread(target=_assign_in_thread, args=(api, manager.id, leads[who.id], who.id))
            for who in (alice, bob)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        heard = _heard(sub, 30)
    finally:
        release.set()
    for who in (alice, bob):
        mine = [m for uid, m in heard if uid == who.id]
        # Each of the user's notifications once, in the order committed (ids and the prevId chain).
        assert [m["data"]["customerId"] for m in mine] == leads[who.id]
        assert [m["prevId"] for m in mine[1:]] == [m["id"] for m in mine[:-1]]
    # ... and the socket of the committing process's own recipient still gets them once the loop runs.
    inbox = ok(api.client(alice).get("/api/notifications"))["items"]
    assert len(inbox) == 15
