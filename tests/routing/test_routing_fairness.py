"""Fair rotation under concurrency: many requests routing at once, in one api process or in several over one
PostgreSQL, never give anyone two turns — per rule, the owners follow the rotation exactly, so counts differ
by at most one. And a big batch is decided with a fixed number of queries, however many leads it has.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select
from support import Api, ok
from support.leads import at_once

from leadpush.assignment.models import Assignment
from leadpush.leads.models import Customer
from leadpush.routing.hooks import route_new_leads
from leadpush.users.models import User

SOURCES = ("抖音广告", "官网")


def routed_in_order(session: Any) -> dict[str, list[int]]:
    """Per rule (by the reason written in history), who got each routed lead, in the order the turns were taken."""
    rows = session.execute(
        select(Assignment.reason, Assignment.to_user_id).where(Assignment.via == "route").order_by(Assignment.id)
    )
    out: dict[str, list[int]] = {}
    for reason, to_user in rows:
        out.setdefault(reason, []).append(to_user)
    return out


def assert_cyclic(owners: list[int], people: list[int]) -> None:
    """The owners go round `people` (by id) exactly, from the first: nobody got a second turn early."""
    expected = [people[i % len(people)] for i in range(len(owners))]
    assert owners == expected, owners
    counts = Counter(owners)
    assert max(counts.values()) - min(counts.values()) <= 1, counts


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
def test_concurrent_requests_in_one_process_take_turns_exactly(api: Api, team):
    dave = api.user("周杰", "sales", "A")
    admin = api.client(team.admin)
    ok(
        admin.post(
            "/api/distribution-rules",
            json={"name": "抖音轮流", "team": "A", "sources": ["抖音广告"], "action": "round_robin"},
        ),
        201,
    )
    web = [{"userId": team.alice.id}, {"userId": team.carol.id}]
    ok(
        admin.post(
            "/api/distribution-rules",
            json={"name": "官网轮流", "sources": ["官网"], "action": "round_robin", "members": web},
        ),
        201,
    )
    clients = [api.client(team.manager) for _ in range(8)]
    for c in clients:
        ok(c.get("/api/me"))

    def post(i: int) -> httpx.Response:
        c = clients[i % len(clients)]
        return c.post("/api/customers", json={"name": f"客户{i}", "phone": f"139{i:08d}", "source": SOURCES[i % 2]})

    # Waves of 8 requests released together (PostgreSQL's connections are shared with other test runs).
    answers = [r for start in range(0, 64, 8) for r in at_once([lambda i=i: post(i) for i in range(start, start + 8)])]
    assert all(r.status_code == 201 for r in answers), [r.text for r in answers if r.status_code != 201]

    with api.ctx.db.read() as session:
        turns = routed_in_order(session)
    assert_cyclic(turns["分配规则：抖音轮流"], sorted([team.alice.id, team.bob.id, dave.id]))
    assert_cyclic(turns["分配规则：官网轮流"], sorted([team.alice.id, team.carol.id]))
    assert len(turns["分配规则：抖音轮流"]) == len(turns["分配规则：官网轮流"]) == 32


def test_several_api_processes_routing_at_once_take_turns_exactly(cluster):
    apis = [cluster.spawn("api", name=f"api-{i}") for i in range(3)]
    _, admin = cluster.user("管理员", "admin", "A")
    _, manager = cluster.user("王经理", "manager", "A")
    people = sorted(cluster.user(name)[0] for name in ("李丽", "赵强", "孙娜", "周杰"))
    headers = {"Authorization": f"Bearer {admin}"}
    r = httpx.post(
        f"{apis[0].url}/api/distribution-rules",
        headers=headers,
        timeout=30,
        json={"name": "全员轮流", "team": "A", "action": "round_robin"},
    )
    assert r.status_code == 201, r.text

    def post(i: int) -> int:
        url = apis[i % len(apis)].url
        body: Any = {"name": f"客户{i}", "phone": f"139{i:08d}", "source": "抖音广告"}
        if i % 5 == 0:  # some requests carry a small batch
            body = [body, {**body, "name": f"客户{i}b"}]
        answer = httpx.post(
            f"{url}/api/customers", headers={"Authorization": f"Bearer {manager}"}, json=body, timeout=60
        )
        assert answer.status_code == 201, answer.text
        return len(body) if isinstance(body, list) else 1

    with ThreadPoolExecutor(8) as pool:  # PostgreSQL connections are shared with other test runs
        created = sum(pool.map(post, range(60)))

    with cluster.ctx.db.read() as session:
        owners = routed_in_order(session)["分配规则：全员轮流"]
        unowned = session.scalar(select(Customer.id).where(Customer.owner_id.is_(None)).limit(1))
    assert len(owners) == created and unowned is None
    assert_cyclic(owners, people)


def test_a_big_batch_is_routed_with_as_few_queries_as_a_small_one(api: Api, team):
    api.ctx.clock.set(datetime(2026, 3, 2, 1, 5, tzinfo=UTC))
    ok(
        api.client(team.admin).post(
            "/api/distribution-rules", json={"name": "轮流", "team": "A", "action": "round_robin"}
        ),
        201,
    )
    ok(
        api.client(team.alice).put(
            f"/api/users/{team.alice.id}/availability", json={"workingHours": {"1": [["09:00", "18:00"]]}}
        )
    )

    def statements_to_route(n: int) -> int:
        count = 0

        def counted(*_args: Any) -> None:
            nonlocal count
            count += 1

        with api.ctx.db.write() as session:
            manager = session.get(User, team.manager.id)
            now = api.ctx.clock.now()
            leads = [
                Customer(
                    name=f"客户{i}",
                    phone="13900000000",
                    source="抖音广告",
                    owner_id=None,
                    pooled_at=now,
                    created_by=manager.id if manager else None,
                    version=1,
                    created_at=now,
                    updated_at=now,
                )
                for i in range(n)
            ]
            session.add_all(leads)
            session.flush()
            event.listen(api.ctx.db.engine, "before_cursor_execute", counted)
            try:
                result = route_new_leads(api.ctx, session, leads, actor=manager)
            finally:
                event.remove(api.ctx.db.engine, "before_cursor_execute", counted)
            assert result is not None and len(result.changed) == n
        return count

    small, big = statements_to_route(4), statements_to_route(2000)
    # Bulk inserts and IN lists go in chunks (a few more statements for 2,000 leads), never one per lead.
    assert big <= small + 10, (small, big)
