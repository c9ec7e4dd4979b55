"""Catch-up hints coalesce: hints for many users arriving in one loop tick (a burst of commits, or the
hints another api process publishes) are answered with one ledger read for all of their sockets, and
each socket still gets exactly its own notifications, once, in id order (issue 17)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from support.wsclient import WsClient

from leadpush.notify import ws as ws_module
from leadpush.notify.models import Notification


def _write(ctx, counts: dict[int, int]) -> dict[int, list[int]]:
    """`counts[uid]` notifications for each user in one transaction, chained by prev_id; their ids."""
    written: dict[int, list[int]] = {}
    with ctx.db.write() as session:
        for _round in range(max(counts.values())):
            for uid, count in counts.items():
                if len(written.setdefault(uid, [])) >= count:
                    continue
                prev = written[uid][-1] if written[uid] else None
                n = Notification(
                    recipient_id=uid,
                    kind="customer_assigned",
                    title="新线索",
                    body="",
                    payload={"n": len(written[uid])},
                    dedupe_key=f"coalesce-{uuid.uuid4().hex}",
                    prev_id=prev,
                )
                session.add(n)
                session.flush()
                written[uid].append(n.id)
    return written


def _hint_all_in_one_tick(runtime, user_ids: list[int]) -> None:
    def hint() -> None:
        for uid in user_ids:
            runtime.hub.deliver(uid, None)

    runtime._loop.call_soon_threadsafe(hint)


@pytest.fixture
def runtime(stack):
    _, server = stack
    return server.server.config.app.state.runtime


def _counting_reads(runtime, monkeypatch) -> list[dict[int, int]]:
    reads: list[dict[int, int]] = []
    real = runtime.hub.read_after

    def counted(afters: dict[int, int]):
        reads.append(dict(afters))
        return real(afters)

    monkeypatch.setattr(runtime.hub, "read_after", counted)
    return reads


def test_many_users_hinted_at_once_are_read_once_and_each_gets_exactly_its_own(api, runtime, monkeypatch):
    users = [api.user(f"并发{i}") for i in range(12)]
    sockets = {u.id: [WsClient(api.url, u.token, resume=0)] for u in users}
    sockets[users[0].id].append(WsClient(api.url, users[0].token, resume=0))  # two tabs of one user
    for conns in sockets.values():
        for ws in conns:
            ws.next_of("unread")
    reads = _counting_reads(runtime, monkeypatch)
    written = _write(api.ctx, {u.id: 1 + i % 3 for i, u in enumerate(users)})
    _hint_all_in_one_tick(runtime, [u.id for u in users])
    for uid, conns in sockets.items():
        for ws in conns:
            assert [m["id"] for m in ws.notifications(len(written[uid]), timeout=30)] == written[uid]
    for uid, conns in sockets.items():
        for ws in conns:
            assert [m["id"] for m in ws.drain(0.3)] == written[uid]  # nothing twice
            ws.close()
    # One read answered every hinted user (allow a second, should a socket's own catch-up race it).
    assert 1 <= len(reads) <= 2
    assert set(reads[0]) == set(sockets)


def test_a_user_with_more_than_a_page_in_a_batch_still_gets_everything_in_order(api, runtime, monkeypatch):
    monkeypatch.setattr(ws_module, "BATCH_PAGE", 5)
    users = [api.user(f"积压{i}") for i in range(4)]
    sockets = {u.id: WsClient(api.url, u.token, resume=0) for u in users}
    for ws in sockets.values():
        ws.next_of("unread")
    written = _write(api.ctx, {u.id: (9 if i == 1 else 2) for i, u in enumerate(users)})
    _hint_all_in_one_tick(runtime, [u.id for u in users])
    for uid, ws in sockets.items():
        assert [m["id"] for m in ws.notifications(len(written[uid]), timeout=30)] == written[uid]
        assert [m["id"] for m in ws.drain(0.3)] == written[uid]
        ws.close()


def test_hints_coalesce_within_a_tick_only_for_sockets_not_for_long_polls(api, runtime):
    # A long poll waiting for a user is woken by its hint directly (it reads for itself).
    user = api.user("长轮询")
    waiter_done = asyncio.run_coroutine_threadsafe(_long_poll_woken(runtime, user.id), runtime._loop)
    assert waiter_done.result(timeout=10) is True


async def _long_poll_woken(runtime, uid: int) -> bool:
    from leadpush.notify.hub import Waiter

    waiter = Waiter("token-hash")
    assert runtime.hub.try_register(uid, waiter, 5)
    try:
        runtime.hub.deliver(uid, None)
        await asyncio.wait_for(waiter.event.wait(), 5)
        return True
    finally:
        runtime.hub.unregister(uid, waiter)
