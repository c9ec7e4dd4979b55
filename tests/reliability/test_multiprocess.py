"""Several leadpush processes over the real PostgreSQL and Redis, as a company that outgrew one."""

from __future__ import annotations

import random
from collections import Counter

import httpx
import pytest
from support import postgres_database
from support.leads import create_leads
from support.procs import Cluster, PrivateRedis
from support.wsclient import WsClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # clusters of `leadpush serve` processes


def assign(base_url: str, token: str, lead_id: int, to: int) -> None:
    r = httpx.patch(
        f"{base_url}/api/customers/{lead_id}/assign",
        json={"assignedTo": to},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text


def test_two_api_processes_and_two_workers_deliver_each_notification_once_to_its_owner(cluster):
    api_a = cluster.spawn("api", name="api-a")
    api_b = cluster.spawn("api", name="api-b")
    cluster.spawn("worker", name="worker-1")
    cluster.spawn("worker", name="worker-2")
    _, manager = cluster.user("王经理", "manager")
    sales = {name: cluster.user(name) for name in ("李丽", "赵强", "孙娜")}

    # Clients spread over both API processes; 李丽 is connected to both at once (web + mini program).
    clients = {
        ("李丽", "a"): WsClient(api_a.url, sales["李丽"][1], resume=0),
        ("李丽", "b"): WsClient(api_b.url, sales["李丽"][1], resume=0),
        ("赵强", "b"): WsClient(api_b.url, sales["赵强"][1], resume=0),
        ("孙娜", "a"): WsClient(api_a.url, sales["孙娜"][1], resume=0),
    }
    for ws in clients.values():
        ws.next_of("unread")

    leads = create_leads(api_a.url, manager, 30)
    rng = random.Random(5)
    expected: Counter[str] = Counter()
    owner_of: dict[int, str] = {}
    for i, lead in enumerate(leads):
        who = rng.choice(list(sales))
        assign((api_a if i % 2 else api_b).url, manager, lead, sales[who][0])
        expected[who] += 1
        owner_of[lead] = who

    for (who, _), ws in clients.items():
        got = ws.notifications(expected[who], timeout=15)
        ws.drain(0.5)
        got = ws.notes()
        ids = [m["id"] for m in got]
        assert len(ids) == len(set(ids)) == expected[who], (who, ids)
        assert ids == sorted(ids)
        assert all(owner_of[m["data"]["customerId"]] == who for m in got)
    for ws in clients.values():
        ws.close()


def test_an_assignment_through_either_node_reaches_a_socket_on_the_other(cluster):
    api_a = cluster.spawn("api", "worker", name="node-a")
    api_b = cluster.spawn("api", "worker", name="node-b")
    _, manager = cluster.user("王经理", "manager")
    alice_id, alice = cluster.user("李丽")
    ws = WsClient(api_a.url, alice, resume=0)
    ws.next_of("unread")
    leads = create_leads(api_a.url, manager, 22)
    # One assignment through each node first: a process's first request (its imports, its first database
    # connections) is start-up, not the arrival time this is about.
    for i, (lead, node) in enumerate(zip(leads[:2], (api_a, api_b), strict=True)):
        assign(node.url, manager, lead, alice_id)
        ws.notifications(i + 1, timeout=10)
    # Each assignment reaches the socket on node A whichever node committed it, one by one, each within a few
    # seconds even on a loaded machine (the arrival times themselves are a benchmark's: docs/benchmarks.md).
    for i, lead in enumerate(leads[2:], start=2):
        node = api_a if i % 2 == 0 else api_b
        assign(node.url, manager, lead, alice_id)
        got = ws.notifications(i + 1, timeout=5)
        assert [n["data"]["customerId"] for n in got][-1] == lead, (i, node.url)
    ws.close()


def test_redis_restart_mid_burst_loses_nothing(tmp_path):
    private = PrivateRedis().start()
    with postgres_database() as db_url:
        c = Cluster(db_url, private.url, tmp_path)
        try:
            api_a = c.spawn("api", name="api-a")
            api_b = c.spawn("api", name="api-b")
            c.spawn("worker", name="worker")
            _, manager = c.user("王经理", "manager")
            alice_id, alice = c.user("李丽")
            ws = WsClient(api_a.url, alice, resume=0)
            ws.next_of("unread")
            leads = create_leads(api_b.url, manager, 40)
            for i, lead in enumerate(leads):
                if i == 15:
                    private.stop()  # Redis goes away mid-burst...
                if i == 25:
                    private.start()  # ...and comes back on the same port.
                assign(api_b.url, manager, lead, alice_id)
            got = ws.notifications(40, timeout=30)
            ws.drain(0.5)
            ids = [m["id"] for m in ws.notes()]
            assert len(ids) == len(set(ids)) == 40
            assert ids == sorted(ids)
            ws.close()
            assert {m["data"]["customerId"] for m in got} == set(leads)
            # The in-app ledger rows all end up sent, none dead.
            r = httpx.get(f"{api_a.url}/readyz", timeout=5)
            assert r.status_code == 200 and r.json()["checks"]["redis"] is True
        finally:
            c.close()
            private.stop()
