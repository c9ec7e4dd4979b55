"""Real parallel requests against one lead: exactly one winner, exactly one notification, exactly one history row.

Each request runs on its own HTTP connection and thread; a barrier releases them together so they reach the
server at the same moment (on PostgreSQL they really do overlap inside the database; on SQLite the write lock
serialises them and the later ones must see the earlier one's change).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from support.api import ok, refused
from support.leads import about, at_once, customer, history, notes, notes_about, warm

from leadpush.notify.models import Notification


def managers(api: Any, n: int) -> list[Any]:
    return [api.user(f"经理{i}", "manager", "A") for i in range(n)]


@pytest.mark.parametrize("via", ("web", "miniprogram"))
def test_eight_managers_assigning_one_lead_with_the_same_version_leave_one_owner(api, team, via):
    lead = api.lead(team.manager)
    bosses = managers(api, 8)
    targets = [team.alice if i % 2 else team.bob for i in range(8)]
    path = f"/api/customers/{lead['id']}/assign" if via == "web" else f"/api/customers/miniprogram/{lead['id']}/assign"
    calls = [
        (lambda c=warm(api, m), t=t: c.patch(path, json={"assignedTo": t.id, "version": lead["version"]}))
        for m, t in zip(bosses, targets, strict=True)
    ]

    responses = at_once(calls)

    assert sorted(r.status_code for r in responses) == [200] + [409] * 7, [r.text for r in responses]
    for r in responses:
        if r.status_code == 409:
            refused(r, 409, "version_conflict")
    winner = next(i for i, r in enumerate(responses) if r.status_code == 200)
    owner = targets[winner]
    assert customer(api, lead["id"]).owner_id == owner.id
    assert customer(api, lead["id"]).version == lead["version"] + 1
    (row,) = history(api, lead["id"])
    assert row.to_user_id == owner.id and row.actor_id == bosses[winner].id
    (note,) = notes_about(api, lead["id"])
    assert note.recipient_id == owner.id and note.kind == "customer_assigned"
    assert responses[winner].json()["data"]["notificationData"]["notificationId"] == note.id


def test_two_managers_giving_the_same_lead_to_different_people_at_once(api, team):
    other = api.user("刘经理", "manager", "A")
    for _round in range(4):
        lead = api.lead(team.manager)
        a, b = warm(api, team.manager), warm(api, other)
        ra, rb = at_once(
            [
                lambda a=a, lead=lead: a.patch(
                    f"/api/customers/{lead['id']}/assign", json={"assignedTo": team.alice.id, "version": 1}
                ),
                lambda b=b, lead=lead: b.patch(
                    f"/api/customers/miniprogram/{lead['id']}/assign", json={"assignedTo": team.bob.id, "version": 1}
                ),
            ]
        )
        assert sorted([ra.status_code, rb.status_code]) == [200, 409], (ra.text, rb.text)
        winner, loser = (team.alice, team.bob) if ra.status_code == 200 else (team.bob, team.alice)
        assert customer(api, lead["id"]).owner_id == winner.id
        assert [n.recipient_id for n in notes_about(api, lead["id"])] == [winner.id]
        assert [r.to_user_id for r in history(api, lead["id"])] == [winner.id]
        assert not [n for n in notes(api, loser) if lead["id"] in about(n)]


def test_without_a_version_two_managers_at_once_still_leave_a_consistent_story(api, team):
    """No version sent (old front ends): each request that succeeds is exactly one change, told exactly once."""
    other = api.user("刘经理", "manager", "A")
    lead = api.lead(team.manager)
    a, b = warm(api, team.manager), warm(api, other)
    ra, rb = at_once(
        [
            lambda: a.patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": team.alice.id}),
            lambda: b.patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": team.bob.id}),
        ]
    )
    for r in (ra, rb):
        if r.status_code != 200:
            refused(r, 409, "version_conflict")
    wins = [r for r in (ra, rb) if r.status_code == 200]
    assert wins
    rows = history(api, lead["id"])
    assert len(rows) == len(wins)
    assert customer(api, lead["id"]).owner_id == rows[-1].to_user_id
    assert Counter(n.kind for n in notes_about(api, lead["id"])) == Counter(
        {"customer_assigned": len(wins), **({"customer_recycled": 1} if len(wins) == 2 else {})}
    )


def test_eight_managers_handing_out_one_pool_lead_at_once_give_it_to_one_person(api, team):
    lead = api.lead(team.manager)
    bosses = managers(api, 8)
    targets = [team.alice if i % 2 else team.bob for i in range(8)]
    calls = [
        (
            lambda c=warm(api, m), t=t: c.post(
                "/api/customers/public-pool/assign", json={"customerIds": [lead["id"]], "assignedTo": t.id}
            )
        )
        for m, t in zip(bosses, targets, strict=True)
    ]

    datas = [ok(r) for r in at_once(calls)]

    won = [i for i, d in enumerate(datas) if d["customers"]]
    assert len(won) == 1
    owner = targets[won[0]]
    for i, d in enumerate(datas):
        if i in won:
            continue
        # The others learn it is gone (or, asking for the same person, that it is already theirs).
        assert d["customers"] == []
        assert d["unchanged"] == [lead["id"]] or [f["code"] for f in d["failed"]] in (
            ["not_in_pool"],
            ["version_conflict"],
        )
        if d["unchanged"]:
            assert targets[i] == owner
    assert customer(api, lead["id"]).owner_id == owner.id
    assert len(history(api, lead["id"])) == 1
    (note,) = notes_about(api, lead["id"])
    assert note.recipient_id == owner.id


def test_salespeople_racing_to_claim_one_pool_lead(api, team):
    lead = api.lead(team.manager)
    sales = [api.user(f"销售{i}", "sales", "A") for i in range(6)]
    calls = [(lambda c=warm(api, p): c.post(f"/api/customers/{lead['id']}/claim")) for p in sales]

    responses = at_once(calls)

    assert sorted(r.status_code for r in responses) == [200] + [409] * 5, [r.text for r in responses]
    for r in responses:
        if r.status_code == 409:
            assert r.json()["code"] in ("not_in_pool", "version_conflict")
    winner = sales[next(i for i, r in enumerate(responses) if r.status_code == 200)]
    assert customer(api, lead["id"]).owner_id == winner.id
    assert len(history(api, lead["id"])) == 1
    assert [n.recipient_id for n in notes_about(api, lead["id"])] == [winner.id]


def test_overlapping_batches_in_opposite_orders_never_fail_and_account_for_every_lead(api, team):
    """Two managers move the same 40 leads at once, one front to back, the other back to front.

    Row locks taken in opposite orders would deadlock on PostgreSQL; every request must still answer 200 and
    every lead end up moved exactly as often as the answers say.
    """
    other = api.user("刘经理", "manager", "A")
    created = ok(
        api.client(team.manager).post(
            "/api/customers", json=[{"name": f"客户{i}", "phone": f"1390000{i:04d}"} for i in range(40)]
        ),
        201,
    )["customers"]
    ids = [c["id"] for c in created]
    a, b = warm(api, team.manager), warm(api, other)
    moved: Counter[int] = Counter()
    for _round in range(3):
        ra, rb = at_once(
            [
                lambda: a.post("/api/customers/batch-assign", json={"customerIds": ids, "assignedTo": team.alice.id}),
                lambda: b.post(
                    "/api/customers/batch-assign", json={"customerIds": ids[::-1], "assignedTo": team.bob.id}
                ),
            ]
        )
        for r in (ra, rb):
            data = ok(r)
            for c in data["customers"]:
                moved[c["id"]] += 1
            assert {f["code"] for f in data["failed"]} <= {"version_conflict"}
            assert len(data["customers"]) + len(data["unchanged"]) + len(data["failed"]) == len(ids)
    for i in ids:
        rows = history(api, i)
        assert len(rows) == moved[i]
        assert customer(api, i).owner_id == rows[-1].to_user_id
    # One digest (or single notice) per recipient per batch, never one per lead.
    assigned = [n for n in notes(api) if n.kind in ("customer_assigned", "customers_assigned")]
    assert sum(len(about(n)) for n in assigned) == sum(moved.values())
    assert len({(n.recipient_id, n.payload["batchId"]) for n in assigned}) == len(assigned)
    assert all(isinstance(n, Notification) for n in assigned)
