"""Races between real HTTP clients: versions, owners, claim limits and capacities hold under concurrency.

Every request runs on its own connection and thread against the live server, on SQLite and on PostgreSQL.
What is checked is what a user (or an auditor reading the database) would see: every ownership change in the
history is told to its new owner exactly once, the history's previous owners form one unbroken chain, and no
limit is exceeded however many requests arrive at once.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from support.api import ok, refused
from support.leads import at_once, customer, history, notes, warm

from leadpush.assignment.models import Assignment
from leadpush.leads.models import Customer

pytestmark = pytest.mark.slow  # long concurrency: dozens of threads hammering the same leads

HAMMER_SECONDS = 4.0


def pool_leads(api: Any, who: Any, n: int, prefix: str = "公海") -> list[int]:
    body = [{"name": f"{prefix}{i}", "phone": f"1390000{i:04d}"} for i in range(n)]
    return [c["id"] for c in ok(api.client(who).post("/api/customers", json=body), 201)["customers"]]


def check_story(api: Any, lead_id: int) -> list[Assignment]:
    """The lead's history is one chain and each change was told to its new owner exactly once (alone, or in
    a batch's digest)."""
    rows = history(api, lead_id)
    owner = None
    for row in rows:
        assert row.from_user_id == owner, f"lead {lead_id}: history says from {row.from_user_id}, owner was {owner}"
        owner = row.to_user_id
    assert customer(api, lead_id).owner_id == owner
    alone = [
        (n.recipient_id, n.payload["fromUserId"])
        for n in notes(api, kind="customer_assigned")
        if n.payload["customerId"] == lead_id
    ]
    in_digest = [n.recipient_id for n in notes(api, kind="customers_assigned") if lead_id in n.payload["customerIds"]]
    changes = [(r.to_user_id, r.from_user_id) for r in rows if r.to_user_id is not None]
    told = Counter([to for to, _from in alone] + in_digest)
    assert told == Counter(to for to, _from in changes), f"lead {lead_id}: {len(changes)} changes, {told} notices"
    assert not Counter(alone) - Counter(changes), f"lead {lead_id}: a notice names the wrong previous owner"
    return rows


def owned(api: Any, person: Any) -> int:
    with api.ctx.db.read() as s:
        return s.scalar(select(func.count()).select_from(Customer).where(Customer.owner_id == person.id)) or 0


def claims_of(api: Any, person: Any) -> int:
    with api.ctx.db.read() as s:
        query = select(func.count()).select_from(Assignment)
        return s.scalar(query.where(Assignment.to_user_id == person.id, Assignment.via == "claim")) or 0


def hammer(workers: list[Any], seconds: float) -> None:
    """Run each worker (a function of a Random) in its own thread in a loop for `seconds`; re-raise any failure."""
    stop = time.monotonic() + seconds
    errors: list[BaseException] = []

    def loop(work: Any, seed: int) -> None:
        rng = random.Random(seed)
        try:
            while time.monotonic() < stop and not errors:
                work(rng)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(w, i)) for i, w in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 120)
    if errors:
        raise errors[0]


def test_assignments_and_follow_ups_hammering_the_same_leads_tell_every_change_exactly_once(api, team):
    """Follow-ups never roll a lead's version back, so stale assignments fail and no notification is dropped."""
    leads = pool_leads(api, team.manager, 3)
    sales = [team.alice, team.bob, *(api.user(f"销售{i}", "sales", "A") for i in range(3))]
    bosses = [team.manager, *(api.user(f"经理{i}", "manager", "A") for i in range(3))]
    follow_ups: Counter[int] = Counter()
    counted = threading.Lock()

    def assigner(client: httpx.Client, with_version: bool) -> Any:
        def work(rng: random.Random) -> None:
            lead = rng.choice(leads)
            body: dict[str, Any] = {"assignedTo": rng.choice(sales).id}
            if with_version:
                body["version"] = ok(client.get(f"/api/customers/{lead}"))["version"]
            r = client.patch(f"/api/customers/{lead}/assign", json=body)
            if r.status_code != 200:
                refused(r, 409, "version_conflict")

        return work

    def follower(client: httpx.Client) -> Any:
        def work(rng: random.Random) -> None:
            lead = rng.choice(leads)
            ok(client.post(f"/api/customers/{lead}/follow-ups", json={"content": "电话沟通"}), 201)
            with counted:
                follow_ups[lead] += 1

        return work

    workers = [assigner(warm(api, b), with_version=i % 2 == 0) for i, b in enumerate(bosses)]
    workers += [follower(warm(api, team.admin)) for _ in range(3)]
    hammer(workers, HAMMER_SECONDS)

    for lead in leads:
        rows = check_story(api, lead)
        # Each change and each follow-up raised the version by exactly one: none was lost or rolled back.
        assert customer(api, lead).version == 1 + len(rows) + follow_ups[lead]


def test_many_managers_assigning_one_lead_without_a_version_each_decide_on_a_different_owner(api, team):
    """Old front ends send no version: the request is decided on the owner it saw, and a loser is told so."""
    bosses = [team.manager, *(api.user(f"经理{i}", "manager", "A") for i in range(7))]
    sales = [api.user(f"销售{i}", "sales", "A") for i in range(8)]
    clients = [warm(api, b) for b in bosses]
    for _round in range(4):
        (lead,) = pool_leads(api, team.manager, 1, prefix=f"第{_round}轮")
        calls = [
            (lambda c=c, s=s, lead=lead: c.patch(f"/api/customers/{lead}/assign", json={"assignedTo": s.id}))
            for c, s in zip(clients, sales, strict=True)
        ]
        responses = at_once(calls)

        winners = [s.id for s, r in zip(sales, responses, strict=True) if r.status_code == 200]
        for r in responses:
            if r.status_code != 200:
                refused(r, 409, "version_conflict")
        rows = check_story(api, lead)
        assert sorted(r.to_user_id for r in rows) == sorted(winners)
        # Each winner moved the lead away from a different owner: no two were decided on the same one.
        assert len({r.from_user_id for r in rows}) == len(rows)
        # Each winner's answer names its own notice (the old front end's notificationData).
        told = {n.id: n.recipient_id for n in notes(api, kind="customer_assigned") if n.payload["customerId"] == lead}
        answered = [r.json()["data"]["notificationData"] for r in responses if r.status_code == 200]
        assert sorted(told[d["notificationId"]] for d in answered) == sorted(winners)


def test_eighty_claims_at_once_stop_exactly_at_the_daily_limit(api, team, monkeypatch):
    monkeypatch.setattr(api.ctx.settings, "claim_daily_limit", 50)
    leads = pool_leads(api, team.manager, 80)
    # Fresh connections: 80 warmed ones could sit idle past the server's keep-alive while the others warm up.
    clients = [api.client(team.alice) for _ in leads]
    calls = [
        (lambda c=c, lead=lead: c.post(f"/api/customers/{lead}/claim")) for c, lead in zip(clients, leads, strict=True)
    ]

    responses = at_once(calls)

    assert Counter(r.status_code for r in responses) == {200: 50, 409: 30}, Counter(r.text for r in responses)
    for r in responses:
        if r.status_code == 409:
            refused(r, 409, "claim_limit_reached")
    assert claims_of(api, team.alice) == 50
    assert owned(api, team.alice) == 50


def test_assignments_and_claims_at_once_fill_a_capacity_of_five_and_no_more(api, team):
    full = api.user("满员", "sales", "A", capacity=5)
    leads = pool_leads(api, team.manager, 24)
    bosses = [team.manager, *(api.user(f"经理{i}", "manager", "A") for i in range(3))]
    calls = []
    for i, lead in enumerate(leads):
        if i % 3 == 2:
            calls.append(lambda c=api.client(full), lead=lead: c.post(f"/api/customers/{lead}/claim"))
        else:
            via = "/miniprogram" if i % 3 else ""
            c = api.client(bosses[i % len(bosses)])
            calls.append(
                lambda c=c, lead=lead, via=via: c.patch(
                    f"/api/customers{via}/{lead}/assign", json={"assignedTo": full.id}
                )
            )

    responses = at_once(calls)

    assert Counter(r.status_code for r in responses) == {200: 5, 409: 19}, Counter(r.text for r in responses)
    for r in responses:
        if r.status_code == 409:
            refused(r, 409, "at_capacity")
    assert owned(api, full) == 5
    for lead in leads:
        check_story(api, lead)


def test_batches_at_once_fill_a_capacity_of_five_and_no_more(api, team):
    full = api.user("满员", "sales", "A", capacity=5)
    leads = pool_leads(api, team.manager, 24)
    bosses = [team.manager, *(api.user(f"经理{i}", "manager", "A") for i in range(5))]
    paths = ("/api/customers/batch-assign", "/api/customers/public-pool/assign")
    calls = [
        (
            lambda c=warm(api, b), part=leads[i * 4 : i * 4 + 4], path=paths[i % 2]: c.post(
                path, json={"customerIds": part, "assignedTo": full.id}
            )
        )
        for i, b in enumerate(bosses)
    ]

    datas = [ok(r) for r in at_once(calls)]

    assert sum(len(d["customers"]) for d in datas) == 5
    assert sum(len(d["failed"]) for d in datas) == 19
    assert {f["code"] for d in datas for f in d["failed"]} == {"at_capacity"}
    assert owned(api, full) == 5


def test_claims_releases_batches_assignments_and_follow_ups_on_the_same_leads_never_deadlock(api, team):
    """Every kind of write on a few leads at once, with capacities: lock order keeps every answer a 2xx or a
    4xx with a reason (a deadlock would be a 500), and every lead's story still holds."""
    leads = pool_leads(api, team.manager, 6)
    sales = [api.user(f"销售{i}", "sales", "A", capacity=3 if i % 2 else None) for i in range(4)]
    expected = {"version_conflict", "at_capacity", "not_in_pool", "not_owned", "reclaim_cooldown", "not_owner"}
    expected |= {"customer_not_found", "forbidden"}
    expected |= {"previous_owner_cooldown"}  # a pool lead handed back to whom just released it (pool cooldown)

    def answered(r: httpx.Response) -> None:
        assert r.status_code < 500, r.text
        if r.status_code >= 400:
            assert r.json()["code"] in expected, r.text

    def manager(client: httpx.Client) -> Any:
        def work(rng: random.Random) -> None:
            to = rng.choice(sales).id
            if rng.random() < 0.5:
                answered(client.patch(f"/api/customers/{rng.choice(leads)}/assign", json={"assignedTo": to}))
            else:
                picked = rng.sample(leads, 3)
                answered(client.post("/api/customers/batch-assign", json={"customerIds": picked, "assignedTo": to}))

        return work

    def salesperson(client: httpx.Client) -> Any:
        def work(rng: random.Random) -> None:
            lead, roll = rng.choice(leads), rng.random()
            if roll < 0.4:
                answered(client.post(f"/api/customers/{lead}/claim"))
            elif roll < 0.7:
                answered(client.post(f"/api/customers/{lead}/release", json={}))
            else:
                answered(client.post(f"/api/customers/{lead}/follow-ups", json={"content": "已联系"}))

        return work

    workers = [manager(warm(api, m)) for m in (team.manager, api.user("刘经理", "manager", "A"))]
    workers += [salesperson(warm(api, s)) for s in sales]
    hammer(workers, HAMMER_SECONDS)

    for lead in leads:
        check_story(api, lead)
    assert all(owned(api, s) <= 3 for s in sales[1::2])
