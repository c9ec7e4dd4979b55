"""Revoking a user's tokens or deactivating the user ends what they have open, on every process, and
stops every push to a deactivated user.

A revoked token's WebSocket is closed with 4401 and its long poll answers 401 within seconds, whether
the revoke went through this api process or another one (Redis pub/sub), and even if that message is
lost (each process re-checks its sockets' tokens periodically). A deactivated user gets no WeChat or
WeCom message: nothing is planned for them, and what was still pending is skipped, not sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from leadpush_fakes.wechat import WECOM_SEND_PATH
from sqlalchemy import select, update
from support import Api, wait_for
from support.channels import FakeWeChatServer, strict_state
from support.wsclient import WsClient

from leadpush.notify.models import Delivery, Notification
from leadpush.users.models import ApiToken

SIGNED_OUT = 4401


class LongPoll:
    """A long poll (`wait=30`) running in a thread; `.response` once it answered."""

    def __init__(self, url: str, token: str, after: int = 2**31 - 1) -> None:
        self.response: httpx.Response | None = None
        self.elapsed = 0.0
        self._thread = threading.Thread(target=self._run, args=(url, token, after), daemon=True)
        self._thread.start()

    def _run(self, url: str, token: str, after: int) -> None:
        started = time.monotonic()
        self.response = httpx.get(
            f"{url}/api/notifications",
            params={"after": after, "wait": 30},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        self.elapsed = time.monotonic() - started

    def result(self, timeout: float = 30) -> httpx.Response:
        self._thread.join(timeout)
        assert self.response is not None, "the long poll did not answer"
        return self.response


def listeners(stack: Any) -> int:
    """Sockets and long polls registered in the test server's hub (to know a poll is waiting)."""
    return stack[1].server.config.app.state.runtime.hub.count()


def assert_signed_out(poll: LongPoll) -> None:
    r = poll.result()
    assert r.status_code == 401, r.text
    assert r.json()["code"] == "invalid_token"
    assert poll.elapsed < 20  # ended by the revoke, not by its 30 s wait


def open_socket_and_poll(api: Api, stack: Any, token: str) -> tuple[WsClient, LongPoll]:
    before = listeners(stack)
    ws = WsClient(api.url, token, resume=0)
    ws.next_of("unread")
    poll = LongPoll(api.url, token)
    wait_for(lambda: listeners(stack) == before + 2, timeout=30)
    return ws, poll


def test_revoking_tokens_closes_the_socket_and_ends_the_long_poll(api, team, stack):
    ws, poll = open_socket_and_poll(api, stack, team.alice.token)
    bob = WsClient(api.url, team.bob.token, resume=0)
    bob.next_of("unread")

    r = api.client(team.admin).post(f"/api/users/{team.alice.id}/tokens/revoke")
    assert r.status_code == 200, r.text

    assert ws.wait_closed(timeout=30) == SIGNED_OUT
    assert_signed_out(poll)
    # Someone else's socket is untouched.
    bob.send({"type": "ping"})
    bob.next_of("pong", timeout=10)
    assert not bob.closed
    # A lead assigned to alice afterwards reaches no socket of hers (there is none) and bob's stays quiet.
    lead = api.lead(team.manager)
    r = api.client(team.manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": team.alice.id})
    assert r.status_code == 200, r.text
    assert bob.drain(0.3) == []
    bob.close()


def test_deactivating_a_user_closes_the_socket_and_ends_the_long_poll(api, team, stack):
    ws, poll = open_socket_and_poll(api, stack, team.alice.token)
    r = api.client(team.admin).patch(f"/api/users/{team.alice.id}", json={"active": False})
    assert r.status_code == 200, r.text
    assert ws.wait_closed(timeout=30) == SIGNED_OUT
    assert_signed_out(poll)


def test_a_long_poll_outlives_a_token_check_of_its_own_user(api, team, stack):
    # The mini program long-polls while its WebSocket is blocked and probes the socket now and then; the
    # probe's socket re-checks the user's tokens once registered. That check must not take the long poll's
    # still-valid token for a revoked one (it answered 401 and the client stopped for good).
    before = listeners(stack)
    poll = LongPoll(api.url, team.alice.token, after=0)
    wait_for(lambda: listeners(stack) == before + 1, timeout=30)
    ws = WsClient(api.url, team.alice.token, resume=0)
    ws.send({"type": "ping"})
    ws.next_of("pong", timeout=30)  # answered after the socket's token check has run
    api.ctx.signals.auth_changed({team.alice.id})  # as after a revoke of someone's other token
    lead = api.lead(team.manager, assignedTo=team.alice.id)
    r = poll.result()
    assert r.status_code == 200, r.text
    assert [n["data"]["customerId"] for n in r.json()["data"]["items"]] == [lead["id"]]
    assert [n["data"]["customerId"] for n in ws.notifications(1)] == [lead["id"]]
    assert not ws.closed
    ws.close()


def test_a_socket_of_another_still_valid_token_stays_open(api, team, stack):
    second = api.client(team.admin).post(f"/api/users/{team.alice.id}/tokens").json()["data"]["token"]
    old = WsClient(api.url, team.alice.token, resume=0)
    new = WsClient(api.url, second, resume=0)
    for ws in (old, new):
        ws.next_of("unread")
    # Only the first token is revoked (as a per-token revoke would do), then the hub is told.
    with api.ctx.db.write() as session:
        session.execute(
            update(ApiToken).where(ApiToken.prefix == team.alice.token[:8]).values(revoked_at=api.ctx.clock.now())
        )
    api.ctx.signals.auth_changed({team.alice.id})
    assert old.wait_closed(timeout=30) == SIGNED_OUT
    new.send({"type": "ping"})
    new.next_of("pong", timeout=10)
    assert not new.closed
    new.close()


# --------------------------------------------------------------------------------------
# Several processes: api A takes the revoke, api B holds the socket
# --------------------------------------------------------------------------------------


def test_a_revoke_through_one_api_process_closes_the_socket_on_another(cluster):
    api_a = cluster.spawn("api", name="api-a")
    api_b = cluster.spawn("api", name="api-b")
    cluster.spawn("worker", name="worker")
    _, admin = cluster.user("管理员", "admin")
    alice_id, alice = cluster.user("李丽")
    ws = WsClient(api_b.url, alice, resume=0)
    ws.next_of("unread")
    # Registered within milliseconds; one that arrived after the revoke is refused by its token: 401 too.
    poll = LongPoll(api_b.url, alice)
    r = httpx.post(
        f"{api_a.url}/api/users/{alice_id}/tokens/revoke", headers={"Authorization": f"Bearer {admin}"}, timeout=30
    )
    assert r.status_code == 200, r.text
    assert ws.wait_closed(timeout=30) == SIGNED_OUT
    r = poll.result()
    assert r.status_code == 401 and r.json()["code"] == "invalid_token", r.text


def test_a_revoke_through_one_api_process_refuses_plain_requests_on_another_at_once(cluster):
    # Each api process keeps a copy of what a token signs in with (LEADPUSH_AUTH_CACHE_SECONDS): the revoke's
    # message over Redis drops it everywhere, so the copy's minute never lets a revoked token through.
    cluster.env["LEADPUSH_AUTH_CACHE_SECONDS"] = "60"
    api_a = cluster.spawn("api", name="api-a")
    api_b = cluster.spawn("api", name="api-b")
    _, admin = cluster.user("管理员", "admin")
    alice_id, alice = cluster.user("李丽")
    for _ in range(2):  # the first use records itself (a write that drops copies); the second leaves a copy
        me = httpx.get(f"{api_b.url}/api/me", headers={"Authorization": f"Bearer {alice}"}, timeout=30)
        assert me.status_code == 200, me.text
    r = httpx.post(
        f"{api_a.url}/api/users/{alice_id}/tokens/revoke", headers={"Authorization": f"Bearer {admin}"}, timeout=30
    )
    assert r.status_code == 200, r.text
    refused = wait_for(
        lambda: (
            (x := httpx.get(f"{api_b.url}/api/me", headers={"Authorization": f"Bearer {alice}"}, timeout=30))
            and x.status_code == 401
            and x
        ),
        timeout=20,
    )
    assert refused.json()["code"] == "invalid_token"


def test_a_lost_message_is_made_up_by_the_periodic_check(cluster):
    cluster.env["LEADPUSH_SESSION_RECHECK_SECONDS"] = "1"
    api = cluster.spawn("api", "worker", name="api")
    alice_id, alice = cluster.user("李丽")
    ws = WsClient(api.url, alice, resume=0)
    ws.next_of("unread")
    # Revoked behind the api process's back: no pub/sub message at all.
    with cluster.ctx.db.write() as session:
        session.execute(update(ApiToken).where(ApiToken.user_id == alice_id).values(revoked_at=cluster.ctx.clock.now()))
    assert ws.wait_closed(timeout=30) == SIGNED_OUT


# --------------------------------------------------------------------------------------
# No WeChat / WeCom push to a deactivated user
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeWeChatServer]:
    """Overrides the shared `fake`: here WeCom knows two members."""
    with FakeWeChatServer(strict_state(wecom_users=["alice", "bob"])) as server:
        yield server


def deliveries_of(api: Api, user_id: int) -> list[Delivery]:
    with api.ctx.db.read() as session:
        return list(session.scalars(select(Delivery).where(Delivery.recipient_id == user_id).order_by(Delivery.id)))


def wecom_to(fake: FakeWeChatServer, userid: str) -> list[dict]:
    return [m for m in fake.state.get_messages("wecom") if userid in m["touser"]]


def test_a_deactivated_user_gets_no_push_but_keeps_the_history(pushing: Api, fake: FakeWeChatServer):
    api = pushing
    admin = api.user("管理员", "admin", None)
    manager = api.user("王经理", "manager", "A")
    alice = api.user("李丽", wecom_userid="alice")
    bob = api.user("赵强", wecom_userid="bob")
    lead = api.lead(manager, assignedTo=alice.id)
    wait_for(lambda: wecom_to(fake, "alice"), timeout=30)
    assert api.client(admin).patch(f"/api/users/{alice.id}", json={"active": False}).status_code == 200

    # Taking her lead away would tell her (customer_recycled): not any more, she has left.
    r = api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": bob.id})
    assert r.status_code == 200, r.text
    wait_for(lambda: wecom_to(fake, "bob"), timeout=30)
    with api.ctx.db.read() as session:
        recycled = session.scalars(
            select(Notification).where(Notification.recipient_id == alice.id, Notification.kind == "customer_recycled")
        ).one()  # the history is kept
    rows = [d for d in deliveries_of(api, alice.id) if d.notification_id == recycled.id]
    assert rows and all(d.status == "skipped" for d in rows), [(d.channel, d.status) for d in rows]
    assert all("停用" in (d.policy or "") for d in rows)
    assert len(wecom_to(fake, "alice")) == 1  # only the one from before


@pytest.mark.slow  # waits for a failed send to be retried
def test_pending_pushes_of_a_user_deactivated_meanwhile_are_skipped(pushing: Api, fake: FakeWeChatServer):
    api = pushing
    admin = api.user("管理员", "admin", None)
    manager = api.user("王经理", "manager", "A")
    alice = api.user("李丽", wecom_userid="alice")
    fake.state.add_fault(WECOM_SEND_PATH, errcode=-1)  # "system busy": retried later
    api.lead(manager, assignedTo=alice.id)
    wait_for(
        lambda: any(d.channel == "wecom" and d.status == "failed" for d in deliveries_of(api, alice.id)), timeout=30
    )
    assert api.client(admin).patch(f"/api/users/{alice.id}", json={"active": False}).status_code == 200
    fake.state.clear_faults()
    api.ctx.clock.advance(seconds=3600)  # the retry is due
    rows = wait_for(
        lambda: [d for d in deliveries_of(api, alice.id) if d.channel == "wecom" and d.status == "skipped"], timeout=30
    )
    assert isinstance(rows, list)
    assert "停用" in (rows[0].last_error or "")
    assert wecom_to(fake, "alice") == []
