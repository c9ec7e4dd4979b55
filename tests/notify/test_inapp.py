"""In-app channel: what a salesperson's page sees over WebSocket and long-polling."""

from __future__ import annotations

import threading
import time

import pytest
from support.wsclient import WsClient
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def assign(api, manager, lead_id: int, to) -> None:
    r = api.client(manager).patch(f"/api/customers/{lead_id}/assign", json={"assignedTo": to.id})
    assert r.status_code == 200, r.text


def test_bad_token_is_closed_with_policy_violation(api):
    url = api.url.replace("http://", "ws://") + "/ws?token=lp_not-a-real-token"
    with connect(url, open_timeout=5) as ws:
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd.code == 1008


def test_assignment_arrives_live_with_the_contract_shape(api, team):
    ws = WsClient(api.url, team.alice.token, resume=0)
    ws.next_of("unread")
    lead = api.lead(team.manager, name="张三", phone="13800138000", source="抖音广告")
    assign(api, team.manager, lead["id"], team.alice)
    # Pushed on the open socket (how fast: docs/benchmarks.md, assign → WebSocket, p99 well under a second).
    [message] = ws.notifications(1)
    assert message["type"] == "customer_assigned"
    assert isinstance(message["id"], int) and message["createdAt"]
    data = message["data"]
    assert data["customerId"] == lead["id"]
    assert data["customerName"] == "张三"
    assert data["customerPhone"] == "13800138000"
    assert data["source"] == "抖音广告"
    assert data["assignTime"].startswith(time.strftime("%Y-"))
    ws.close()


def test_resume_replays_what_was_missed_in_order_then_goes_live(api, team):
    leads = [api.lead(team.manager, name=f"客户{i}") for i in range(4)]
    first = WsClient(api.url, team.alice.token, resume=0)
    assign(api, team.manager, leads[0]["id"], team.alice)
    [seen] = first.notifications(1)
    first.close()

    # Offline: two more assignments happen.
    assign(api, team.manager, leads[1]["id"], team.alice)
    assign(api, team.manager, leads[2]["id"], team.alice)

    again = WsClient(api.url, team.alice.token, resume=seen["id"])
    missed = again.notifications(2)
    assert [m["data"]["customerName"] for m in missed] == ["客户1", "客户2"]
    assert missed[0]["id"] < missed[1]["id"]
    assign(api, team.manager, leads[3]["id"], team.alice)
    everything = again.notifications(3)
    assert [m["data"]["customerName"] for m in everything] == ["客户1", "客户2", "客户3"]
    assert len({m["id"] for m in again.drain(0.3)}) == 3  # nothing twice
    again.close()


def test_resume_by_query_parameter_works_too(api, team):
    lead = api.lead(team.manager)
    assign(api, team.manager, lead["id"], team.alice)
    ws = WsClient(api.url, team.alice.token, after=0)
    [message] = ws.notifications(1)
    assert message["data"]["customerId"] == lead["id"]
    ws.close()


def test_every_connection_of_a_user_gets_the_message_and_nobody_else_does(api, team):
    web = WsClient(api.url, team.alice.token, resume=0)
    phone = WsClient(api.url, team.alice.token, resume=0)
    other = WsClient(api.url, team.bob.token, resume=0)
    other_team = WsClient(api.url, team.carol.token, resume=0)
    lead = api.lead(team.manager)
    assign(api, team.manager, lead["id"], team.alice)
    assert [m["data"]["customerId"] for m in web.notifications(1)] == [lead["id"]]
    assert [m["data"]["customerId"] for m in phone.notifications(1)] == [lead["id"]]
    assert other.drain(0.5) == []
    assert other_team.drain(0.1) == []
    for ws in (web, phone, other, other_team):
        ws.close()


def test_taking_a_lead_away_tells_the_previous_owner(api, team):
    lead = api.lead(team.manager)
    assign(api, team.manager, lead["id"], team.alice)
    alice = WsClient(api.url, team.alice.token)
    alice.next_of("unread")
    assign(api, team.manager, lead["id"], team.bob)
    [recycled] = alice.notifications(1)
    assert recycled["type"] == "customer_recycled"
    assert recycled["data"]["customerId"] == lead["id"]
    alice.close()


def test_acks_mark_delivered_and_reads_update_the_unread_badge(api, team):
    ws = WsClient(api.url, team.alice.token, resume=0)
    assert ws.next_of("unread")["data"]["unread"] == 0
    lead = api.lead(team.manager)
    assign(api, team.manager, lead["id"], team.alice)
    [message] = ws.notifications(1)
    ws.send({"type": "ack", "ids": [message["id"]]})
    ws.send({"type": "ping"})
    ws.next_of("pong")
    polled = api.client(team.alice).get("/api/notifications").json()["data"]["items"][0]
    assert polled["deliveredAt"] is not None and polled["readAt"] is None
    ws.send({"type": "read", "ids": [message["id"]]})
    assert ws.next_of("unread")["data"]["unread"] == 0
    ws.send({"type": "ack", "ids": "all"})
    assert ws.next_of("error")["code"] == "invalid_ids"
    # A user cannot mark someone else's notification.
    bob = WsClient(api.url, team.bob.token, resume=0)
    lead2 = api.lead(team.manager)
    assign(api, team.manager, lead2["id"], team.alice)
    [second] = ws.notifications(2)[1:]
    bob.send({"type": "read", "ids": [second["id"]]})
    bob.next_of("unread")
    assert api.client(team.alice).get("/api/notifications/unread-count").json()["data"]["unread"] == 1
    ws.close()
    bob.close()


def test_a_notice_about_your_own_action_is_born_read(api, team):
    """Claiming a lead, or a manager taking one themselves, is listed in their inbox but is no news to them."""
    alice = api.client(team.alice)
    lead = api.lead(team.manager)
    assert alice.post(f"/api/customers/{lead['id']}/claim").status_code == 200
    [note] = alice.get("/api/notifications").json()["data"]["items"]
    assert note["type"] == "customer_assigned" and note["readAt"] is not None
    assert alice.get("/api/notifications/unread-count").json()["data"]["unread"] == 0

    boss = api.client(team.manager)
    assign(api, team.manager, api.lead(team.manager)["id"], team.manager)
    assert boss.get("/api/notifications/unread-count").json()["data"]["unread"] == 0
    assign(api, team.admin, api.lead(team.manager)["id"], team.manager)  # someone else's action: news
    assert boss.get("/api/notifications/unread-count").json()["data"]["unread"] == 1


@pytest.mark.slow  # waits out a long poll
def test_polling_returns_what_is_there_and_long_polling_waits_for_the_next(api, team):
    alice = api.client(team.alice)
    lead = api.lead(team.manager)
    assign(api, team.manager, lead["id"], team.alice)
    page = alice.get("/api/notifications", params={"after": 0}).json()["data"]
    assert [i["data"]["customerId"] for i in page["items"]] == [lead["id"]]
    last = page["lastId"]

    # Nothing new: a long poll waits, and answers as soon as an assignment lands.
    lead2 = api.lead(team.manager)
    timer = threading.Timer(0.5, assign, args=(api, team.manager, lead2["id"], team.alice))
    started = time.monotonic()
    timer.start()
    page = alice.get("/api/notifications", params={"after": last, "wait": 10}).json()["data"]
    elapsed = time.monotonic() - started
    timer.join()
    assert [i["data"]["customerId"] for i in page["items"]] == [lead2["id"]]
    assert 0.4 < elapsed < 2.0

    # Still nothing new: it gives up after `wait` seconds with an empty page.
    started = time.monotonic()
    page = alice.get("/api/notifications", params={"after": page["lastId"], "wait": 1}).json()["data"]
    assert page["items"] == [] and 0.9 < time.monotonic() - started < 3

    r = alice.get("/api/notifications", params={"wait": 31})
    assert r.status_code == 422 and r.json()["code"] == "validation_error"


def test_unread_count_and_mark_read(api, team):
    alice = api.client(team.alice)
    for _ in range(3):
        lead = api.lead(team.manager)
        assign(api, team.manager, lead["id"], team.alice)
    assert alice.get("/api/notifications/unread-count").json()["data"]["unread"] == 3
    items = alice.get("/api/notifications").json()["data"]["items"]
    r = alice.post("/api/notifications/read", json={"ids": [items[0]["id"]]})
    assert r.json()["data"]["unread"] == 2
    r = alice.post("/api/notifications/read", json={})
    assert r.json()["data"]["unread"] == 0
    # Bob sees none of Alice's notifications, by polling either.
    assert api.client(team.bob).get("/api/notifications").json()["data"]["items"] == []


@pytest.mark.slow  # waits out a long poll
def test_a_long_poll_is_not_cut_short_by_a_wake_up_with_nothing_new(api, team):
    alice = api.client(team.alice)
    # A hint for Alice (as a commit would send) that brings nothing she has not got.
    timer = threading.Timer(0.3, api.ctx.signals.notifications_committed, args=({team.alice.id},))
    started = time.monotonic()
    timer.start()
    page = alice.get("/api/notifications", params={"after": 0, "wait": 1.5}).json()["data"]
    timer.join()
    assert page["items"] == [] and time.monotonic() - started >= 1.4
