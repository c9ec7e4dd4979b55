"""Resource limits of the live channels: frame size, sockets and long polls per user, no echo."""

from __future__ import annotations

import json
import threading

import httpx
from support import wait_for
from support.wsclient import WsClient, refused_with
from websockets.exceptions import ConnectionClosed

TOO_MANY = 1013  # "try again later"
TOO_BIG = 1009


def test_an_oversized_frame_closes_the_socket(api, team):
    ws = WsClient(api.url, team.alice.token, resume=0)
    ws.next_of("unread")
    # The largest legitimate message (an ack of 1000 ids) is accepted.
    ws.send({"type": "ack", "ids": list(range(2**31 - 1000, 2**31 - 1))})
    ws.send({"type": "ping"})
    ws.next_of("pong", timeout=10)
    try:
        ws.conn.send("x" * (1024 * 1024))
    except ConnectionClosed:
        pass
    assert ws.wait_closed(timeout=30) == TOO_BIG


def test_a_user_may_hold_20_sockets_and_the_21st_is_refused(api, team):
    sockets = [WsClient(api.url, team.alice.token) for _ in range(20)]
    assert refused_with(api.url, team.alice.token) == TOO_MANY
    # Another user is not affected by alice's sockets.
    bob = WsClient(api.url, team.bob.token)
    bob.close()
    # Closing one frees its place.
    sockets.pop().close()
    wait_for(lambda: refused_with(api.url, team.alice.token) is None, timeout=30)
    for ws in sockets:
        ws.close()


def test_a_sixth_concurrent_long_poll_is_refused(api, team):
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def poll() -> None:
        r = api.client(team.alice).get("/api/notifications", params={"after": 0, "wait": 30})
        with lock:
            answers.append(r)

    threads = [threading.Thread(target=poll, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    wait_for(lambda: answers, timeout=30)
    [refused] = answers
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "too_many_polls"
    # The five others are waiting; a notification ends them all.
    lead = api.lead(team.manager)
    r = api.client(team.manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": team.alice.id})
    assert r.status_code == 200, r.text
    for t in threads:
        t.join(30)
    assert sorted(r.status_code for r in answers) == [200] * 5 + [429]


def test_an_unknown_message_type_is_not_echoed(api, team):
    ws = WsClient(api.url, team.alice.token, resume=0)
    ws.next_of("unread")
    ws.send({"type": "<img src=x onerror=alert(1)>"})
    error = ws.next_of("error", timeout=10)
    assert error["code"] == "unknown_type"
    assert "onerror" not in json.dumps(error, ensure_ascii=False)
    ws.close()
