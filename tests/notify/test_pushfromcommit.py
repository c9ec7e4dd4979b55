"""A commit pushes what it wrote: the committing api process hands each new notification to its
recipient's sockets as it is, and tells the other api processes the same in its one hint message, so a
socket that is up to date gets it with no ledger read at all; a socket that missed something re-reads
(prevId), as for any message (issue 17: the cross-process burst)."""

from __future__ import annotations

import asyncio

import pytest
from support import REDIS_URL, require_redis
from support.buses import bus_pair, running, until
from support.wsclient import WsClient

from leadpush.notify import bus as bus_module
from leadpush.notify import service
from leadpush.notify import ws as ws_module
from leadpush.notify.models import Notification


@pytest.fixture
def runtime(stack):
    _, server = stack
    return server.server.config.app.state.runtime


def _count_reads(runtime, monkeypatch) -> list[str]:
    reads: list[str] = []
    shared, own = runtime.hub.read_after, ws_module.WsConnection._read_after

    def shared_read(afters):
        reads.append("shared")
        return shared(afters)

    def own_read(self, after):
        reads.append("own")
        return own(self, after)

    monkeypatch.setattr(runtime.hub, "read_after", shared_read)
    monkeypatch.setattr(ws_module.WsConnection, "_read_after", own_read)
    return reads


def test_a_socket_that_is_up_to_date_gets_a_new_assignment_without_a_ledger_read(api, team, runtime, monkeypatch):
    tabs = [WsClient(api.url, team.alice.token, resume=0) for _ in range(2)]
    for ws in tabs:
        ws.next_of("unread")
    reads = _count_reads(runtime, monkeypatch)
    lead = api.lead(team.manager, name="张三", phone="13800138000")
    r = api.client(team.manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": team.alice.id})
    assert r.status_code == 200, r.text
    stored = api.client(team.alice).get("/api/notifications").json()["data"]["items"][0]
    for ws in tabs:
        [pushed] = ws.notifications(1)
        assert pushed == {**stored, "prevId": pushed["prevId"]}  # what the inbox lists, as pushed
        assert [m["id"] for m in ws.drain(0.3)] == [stored["id"]]  # once (the worker's push is skipped)
        ws.close()
    assert reads == []


def test_what_a_commit_pushes_is_what_the_ledger_read_would_push(api, team):
    lead = api.lead(team.manager, name="黄蓉")
    assert api.client(team.alice).post(f"/api/customers/{lead['id']}/claim").status_code == 200  # born read
    with api.ctx.db.read() as session:
        notes = session.query(Notification).order_by(Notification.id).all()
        assert notes and any(n.read_at is not None for n in notes)
        for n in notes:
            assert service.push_message(n) == service.message_of(n)


def _note(nid: int) -> dict:
    return {"id": nid, "prevId": nid - 1, "type": "customer_assigned", "title": "t", "body": "b", "data": {}}


def _published(user_ids: set[int], pushed: list[tuple[int, dict]], expected: int) -> list[tuple[int, object]]:
    """What another api process's hub is offered when this one publishes one hint message."""

    async def scenario() -> list[tuple[int, object]]:
        sender, receiver = bus_pair()
        heard: list[tuple[int, object]] = []
        receiver.on_inapp(lambda uid, m: heard.append((uid, m)))
        async with running(sender, receiver):
            await sender.publish_hints(user_ids, pushed)
            await until(lambda: len(heard) >= expected)
        return heard

    return asyncio.run(scenario())


def test_the_hint_message_carries_the_notifications_to_the_other_api_processes():
    require_redis(REDIS_URL)
    heard = _published({1, 2}, [(2, _note(7))], expected=2)
    # User 2's notification itself (no re-read needed); user 1 only a hint ("re-read").
    assert sorted(heard, key=lambda h: h[0]) == [(1, None), (2, _note(7))]


def test_a_burst_past_the_cap_hints_the_users_whose_notifications_do_not_all_fit(monkeypatch):
    require_redis(REDIS_URL)
    monkeypatch.setattr(bus_module, "MAX_PUSHED_PER_HINT", 3)
    pushed = [(1, _note(10)), (2, _note(11)), (3, _note(12)), (2, _note(13))]
    heard = _published({1, 2, 3}, pushed, expected=3)
    # Users 1 and 3 fit whole; user 2's second one does not, so user 2 re-reads both, in order.
    assert sorted(heard, key=lambda h: h[0]) == [(1, _note(10)), (2, None), (3, _note(12))]
