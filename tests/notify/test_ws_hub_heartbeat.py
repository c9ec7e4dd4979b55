"""Heartbeats come from one hub-wide task: every socket still hears `{"type":"heartbeat"}` on schedule,
and an open socket costs the server its writer task only (no timer task of its own)."""

from __future__ import annotations

import asyncio
from collections import Counter

from support.procs import LeadpushProcess
from support.wsclient import WsClient


def test_every_socket_hears_heartbeats_from_the_hub(api, team, tmp_path):
    node = LeadpushProcess(
        {"LEADPUSH_DATABASE_URL": api.ctx.settings.database_url, "LEADPUSH_WS_HEARTBEAT_SECONDS": "0.3"},
        ("api",),
        tmp_path,
        "hub-heartbeat",
    ).start()
    try:
        sockets = [WsClient(node.url, user.token, resume=0) for user in (team.alice, team.bob, team.carol)]
        for ws in sockets:
            ws.next_of("unread")
        for ws in sockets:
            for _ in range(3):
                ws.next_of("heartbeat", timeout=10)
        # The protocol around it is unchanged: a ping is answered at once.
        sockets[0].send({"type": "ping"})
        sockets[0].next_of("pong", timeout=10)
        for ws in sockets:
            ws.close()
    finally:
        node.stop()


def _leadpush_tasks(loop: asyncio.AbstractEventLoop) -> Counter[str]:
    async def names() -> Counter[str]:
        found: Counter[str] = Counter()
        for task in asyncio.all_tasks():
            code = getattr(task.get_coro(), "cr_code", None)
            if code is not None and "/leadpush/" in code.co_filename:
                found[code.co_qualname] += 1
        return found

    return asyncio.run_coroutine_threadsafe(names(), loop).result(timeout=10)


def test_an_open_socket_costs_its_writer_task_only(api, team, stack):
    _, server = stack
    loop = server.server.config.app.state.runtime._loop
    before = _leadpush_tasks(loop)
    sockets = [WsClient(api.url, user.token, resume=0) for user in (team.alice, team.bob, team.carol) * 3]
    for ws in sockets:
        ws.next_of("unread")
    added = _leadpush_tasks(loop) - before
    assert dict(added) == {"WsConnection.writer": 9}
    for ws in sockets:
        ws.close()
