"""Assigning leads: the four endpoints of the original system, claim and release, and the ledger rows each writes.

Every test is a short story: someone moves a lead, then we look at what the people involved see (API) and at
what the database recorded (owner, history, notifications, one delivery row per channel) — nothing more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select, text
from support.api import CJK, ok, refused
from support.leads import (
    VIAS,
    assign,
    count,
    customer,
    expect_channels,
    history,
    notes,
)

from leadpush.assignment.models import Assignment
from leadpush.assignment.service import Move, change_owner
from leadpush.leads.models import Customer
from leadpush.notify.ledger import write_prepared
from leadpush.notify.models import Delivery, Notification
from leadpush.users.models import User

# ---------------------------------------------------------------------------------------------------------------
# One lead, one endpoint at a time.


@pytest.mark.parametrize("via", VIAS)
def test_each_endpoint_gives_a_pool_lead_to_alice_records_it_and_tells_her_on_her_channels(api, team, via):
    lead = api.lead(team.manager, name="张三", phone="13800138000", source="抖音广告")
    assert lead["inPool"] is True and lead["ownerId"] is None and lead["version"] == 1

    data = ok(assign(api, team.manager, via, lead["id"], team.alice))

    if via in ("web", "miniprogram"):
        moved, legacy = data, [data["notificationData"]]
    else:
        assert data["failed"] == [] and data["unchanged"] == [] and data["batchId"]
        (moved,) = data["customers"]
        legacy = data["notificationData"]
    assert moved["id"] == lead["id"]
    assert moved["ownerId"] == team.alice.id and moved["ownerName"] == "李丽"
    assert moved["inPool"] is False and moved["assignedAt"] and moved["version"] == 2

    # notificationData stays in the response for old front ends (the server sends the message itself now).
    (nd,) = legacy
    assert nd["type"] == "customer_assigned" and nd["toUserId"] == team.alice.id and nd["openid"] == "o-alice"
    assert nd["page"] == f"pages/customer/detail?id={lead['id']}"
    assert nd["data"]["thing1"]["value"] == "张三" and nd["data"]["phone_number2"]["value"] == "13800138000"
    # No WeChat or WeCom is configured here: the server sends no push, and says so.
    assert nd["sentByServer"] is False

    (row,) = history(api, lead["id"])
    assert (row.from_user_id, row.to_user_id, row.actor_id, row.via) == (None, team.alice.id, team.manager.id, via)

    (note,) = notes(api)
    assert note.recipient_id == team.alice.id and note.kind == "customer_assigned"
    assert nd["notificationId"] == note.id
    expect_channels(api, note, wechat=True, wecom=True)

    # Alice sees it when she polls, with what the design promises the mini program and web console.
    page = ok(api.client(team.alice).get("/api/notifications", params={"after": 0}))
    (item,) = page["items"]
    assert item["id"] == note.id and item["type"] == "customer_assigned" and page["lastId"] == note.id
    assert {"customerId", "customerName", "customerPhone", "source", "assignTime"} <= set(item["data"])
    assert item["data"]["customerId"] == lead["id"] and item["data"]["customerName"] == "张三"
    assert item["data"]["source"] == "抖音广告" and item["data"]["via"] == via
    # ...and the lead is now hers.
    mine = ok(api.client(team.alice).get("/api/customers", params={"owner": "me"}))
    assert [c["id"] for c in mine["items"]] == [lead["id"]]
    # Nobody else heard anything.
    assert ok(api.client(team.bob).get("/api/notifications"))["items"] == []


@pytest.mark.parametrize("via", ("web", "miniprogram", "batch"))
def test_taking_a_lead_from_alice_for_bob_tells_both_of_them(api, team, via):
    lead = api.lead(team.manager, assignedTo=team.alice.id)
    before = len(notes(api))

    data = ok(assign(api, team.manager, via, lead["id"], team.bob))
    moved = data if via != "batch" else data["customers"][0]
    assert moved["ownerId"] == team.bob.id and moved["version"] == lead["version"] + 1

    fresh = notes(api)[before:]
    assert sorted((n.recipient_id, n.kind) for n in fresh) == sorted(
        [(team.bob.id, "customer_assigned"), (team.alice.id, "customer_recycled")]
    )
    got = next(n for n in fresh if n.recipient_id == team.bob.id)
    lost = next(n for n in fresh if n.recipient_id == team.alice.id)
    expect_channels(api, got)  # bob has no openid and no WeCom id: in-app only
    expect_channels(api, lost, wechat=True, wecom=True)
    assert lost.payload["customerId"] == lead["id"] and lost.payload["toUserId"] == team.bob.id
    assert got.dedupe_key != lost.dedupe_key

    rows = history(api, lead["id"])
    assert [(r.from_user_id, r.to_user_id, r.via) for r in rows] == [
        (None, team.alice.id, "web"),
        (team.alice.id, team.bob.id, via),
    ]
    # Alice no longer sees the lead, only that it was taken back from her (and how); bob sees it.
    gone = refused(api.client(team.alice).get(f"/api/customers/{lead['id']}"), 404, "customer_recycled")["data"]
    assert (gone["via"], gone["actorName"], gone["toPool"]) == (via, "王经理", False)
    assert ok(api.client(team.bob).get(f"/api/customers/{lead['id']}"))["ownerId"] == team.bob.id


@pytest.mark.parametrize("via", VIAS)
def test_a_retried_assignment_is_to_the_current_owner_and_changes_and_notifies_nothing(api, team, via):
    lead = api.lead(team.manager)
    ok(assign(api, team.manager, via, lead["id"], team.alice))
    now = ok(api.client(team.alice).get(f"/api/customers/{lead['id']}"))
    assert now["version"] == 2 and len(notes(api)) == 1 and len(history(api, lead["id"])) == 1

    data = ok(assign(api, team.manager, via, lead["id"], team.alice))  # the page retried: the same request again

    if via in ("web", "miniprogram"):
        assert data["version"] == now["version"] and data["updatedAt"] == now["updatedAt"]
        assert data["ownerId"] == team.alice.id and data["notificationData"] is None
    else:
        assert data["customers"] == [] and data["unchanged"] == [lead["id"]] and data["failed"] == []
        assert data["notificationData"] == []
    after = customer(api, lead["id"])
    assert after.owner_id == team.alice.id and after.version == now["version"]
    assert len(notes(api)) == 1 and len(history(api, lead["id"])) == 1


def test_a_retried_assignment_with_the_seen_version_is_a_conflict_and_still_notifies_once(api, team):
    lead = api.lead(team.manager)
    ok(assign(api, team.manager, "web", lead["id"], team.alice, version=1))
    refused(assign(api, team.manager, "web", lead["id"], team.alice, version=1), 409, "version_conflict")
    refused(assign(api, team.manager, "miniprogram", lead["id"], team.bob, version=1), 409, "version_conflict")
    assert customer(api, lead["id"]).owner_id == team.alice.id
    assert len(notes(api)) == 1 and len(history(api, lead["id"])) == 1
    # With the current version the change goes through.
    ok(assign(api, team.manager, "miniprogram", lead["id"], team.bob, version=2))
    assert customer(api, lead["id"]).owner_id == team.bob.id


# ---------------------------------------------------------------------------------------------------------------
# Who may assign what.


def test_salespeople_cannot_assign_through_any_endpoint(api, team):
    pool = api.lead(team.manager)
    own = api.lead(team.manager, assignedTo=team.alice.id)
    for via in VIAS:
        for lead_id, to in ((pool["id"], team.alice), (own["id"], team.bob), (pool["id"], team.bob)):
            refused(assign(api, team.alice, via, lead_id, to), 403, "forbidden")
    assert customer(api, pool["id"]).owner_id is None and customer(api, own["id"]).owner_id == team.alice.id
    assert len(notes(api)) == 1  # only the one from creating `own`


@pytest.mark.parametrize("via", VIAS)
def test_managers_assign_only_within_their_team_and_admins_anywhere(api, team, via):
    pool = api.lead(team.manager)
    carols = api.lead(team.manager_b, assignedTo=team.carol.id)
    single = via in ("web", "miniprogram")

    # To someone of another team: refused outright.
    refused(assign(api, team.manager, via, pool["id"], team.carol), 403, "forbidden")
    refused(assign(api, team.manager, via, pool["id"], team.admin), 403, "forbidden")
    # Another team's lead does not exist for this manager.
    r = assign(api, team.manager, via, carols["id"], team.bob)
    if single:
        refused(r, 404, "customer_not_found")
    else:
        data = ok(r)
        assert data["customers"] == []
        assert [(f["customerId"], f["code"]) for f in data["failed"]] == [(carols["id"], "customer_not_found")]
    # To an unknown person.
    refused(assign(api, team.manager, via, pool["id"], 987654), 404, "user_not_found")
    assert customer(api, pool["id"]).owner_id is None and customer(api, carols["id"]).owner_id == team.carol.id

    # Within the team (themselves included) it works.
    ok(assign(api, team.manager, via, pool["id"], team.manager))
    assert customer(api, pool["id"]).owner_id == team.manager.id
    # An admin moves anything anywhere.
    other = api.lead(team.admin)
    ok(assign(api, team.admin, via, other["id"], team.carol))
    assert customer(api, other["id"]).owner_id == team.carol.id
    if via != "public_pool":
        ok(assign(api, team.admin, via, carols["id"] if single else [carols["id"]], team.alice))
        assert customer(api, carols["id"]).owner_id == team.alice.id


def test_an_inactive_person_or_one_at_capacity_cannot_receive_leads(api, team):
    admin = api.client(team.admin)
    ok(admin.patch(f"/api/users/{team.bob.id}", json={"capacity": 1}))
    first, second = api.lead(team.manager), api.lead(team.manager)
    ok(assign(api, team.manager, "web", first["id"], team.bob))
    refused(assign(api, team.manager, "web", second["id"], team.bob), 409, "at_capacity")
    data = ok(assign(api, team.manager, "batch", [second["id"]], team.bob))
    assert [f["code"] for f in data["failed"]] == ["at_capacity"]

    ok(admin.patch(f"/api/users/{team.alice.id}", json={"active": False}))
    refused(assign(api, team.manager, "miniprogram", second["id"], team.alice), 409, "user_inactive")
    assert customer(api, second["id"]).owner_id is None
    assert [n.recipient_id for n in notes(api)] == [team.bob.id]


# ---------------------------------------------------------------------------------------------------------------
# Batches: one digest per recipient, per-item failures, limits.


def test_a_batch_gives_bob_one_digest_and_reports_what_it_could_not_do(api, team):
    pool = [api.lead(team.manager, name=f"客户{i}", phone=f"1390000000{i}") for i in range(3)]
    alices = api.lead(team.manager, name="李丽的客户", assignedTo=team.alice.id)
    bobs = api.lead(team.manager, name="已是赵强的", assignedTo=team.bob.id)
    carols = api.lead(team.manager_b, name="B组客户", assignedTo=team.carol.id)
    before = len(notes(api))
    ids = [pool[0]["id"], alices["id"], pool[1]["id"], 424242, carols["id"], pool[0]["id"], bobs["id"], pool[2]["id"]]

    data = ok(assign(api, team.manager, "batch", ids, team.bob))

    changed = [pool[0]["id"], alices["id"], pool[1]["id"], pool[2]["id"]]
    assert sorted(c["id"] for c in data["customers"]) == sorted(changed)
    assert all(c["ownerId"] == team.bob.id for c in data["customers"])
    assert data["unchanged"] == [bobs["id"]]
    # Unknown, and another team's lead (invisible to this manager): reported, not done.
    assert sorted((f["customerId"], f["code"]) for f in data["failed"]) == [
        (carols["id"], "customer_not_found"),
        (424242, "customer_not_found"),
    ]
    assert all(CJK.search(f["message"]) for f in data["failed"])
    assert customer(api, carols["id"]).owner_id == team.carol.id

    fresh = notes(api)[before:]
    assert sorted((n.recipient_id, n.kind) for n in fresh) == sorted(
        [(team.bob.id, "customers_assigned"), (team.alice.id, "customer_recycled")]
    )
    digest = next(n for n in fresh if n.recipient_id == team.bob.id)
    assert sorted(digest.payload["customerIds"]) == sorted(changed) and digest.payload["count"] == 4
    assert digest.title == "您有 4 条新线索"
    expect_channels(api, digest)
    recycled = next(n for n in fresh if n.recipient_id == team.alice.id)
    assert recycled.payload["customerId"] == alices["id"]
    expect_channels(api, recycled, wechat=True, wecom=True)
    (nd,) = data["notificationData"]
    assert nd["type"] == "customers_assigned" and nd["notificationId"] == digest.id

    rows = [r for lead_id in changed for r in history(api, lead_id)[-1:]]
    assert {(r.to_user_id, r.via, r.batch_id) for r in rows} == {(team.bob.id, "batch", data["batchId"])}
    assert len(history(api, pool[0]["id"])) == 1  # the duplicate id moved it once


def test_taking_several_leads_from_one_person_sends_them_one_recycled_digest(api, team):
    alices = [api.lead(team.admin, phone=f"1370000000{i}", assignedTo=team.alice.id) for i in range(2)]
    carols = api.lead(team.admin, assignedTo=team.carol.id)
    before = len(notes(api))

    data = ok(assign(api, team.admin, "batch", [a["id"] for a in alices] + [carols["id"]], team.bob))

    assert len(data["customers"]) == 3
    fresh = notes(api)[before:]
    assert sorted((n.recipient_id, n.kind) for n in fresh) == sorted(
        [
            (team.bob.id, "customers_assigned"),
            (team.alice.id, "customers_recycled"),
            (team.carol.id, "customer_recycled"),
        ]
    )
    lost = next(n for n in fresh if n.kind == "customers_recycled")
    assert sorted(lost.payload["customerIds"]) == sorted(a["id"] for a in alices)
    expect_channels(api, lost, wechat=True, wecom=True)
    assert len({n.dedupe_key for n in notes(api)}) == len(notes(api))


def test_a_batch_of_one_lead_is_an_ordinary_assignment_notice(api, team):
    lead = api.lead(team.manager)
    data = ok(assign(api, team.manager, "batch", [lead["id"], lead["id"]], team.alice))
    assert [c["id"] for c in data["customers"]] == [lead["id"]]
    (note,) = notes(api)
    assert note.kind == "customer_assigned" and note.payload["batchId"] == data["batchId"]


def test_the_public_pool_endpoint_hands_out_only_pool_leads(api, team):
    pool = [api.lead(team.manager, phone=f"1360000000{i}") for i in range(3)]
    taken = api.lead(team.manager, assignedTo=team.bob.id)
    before = len(notes(api))

    data = ok(assign(api, team.manager, "public_pool", [p["id"] for p in pool] + [taken["id"], 31337], team.alice))

    assert sorted(c["id"] for c in data["customers"]) == sorted(p["id"] for p in pool)
    assert sorted((f["customerId"], f["code"]) for f in data["failed"]) == sorted(
        [(taken["id"], "not_in_pool"), (31337, "customer_not_found")]
    )
    assert customer(api, taken["id"]).owner_id == team.bob.id
    (digest,) = notes(api)[before:]  # bob keeps his lead and hears nothing
    assert digest.recipient_id == team.alice.id and digest.kind == "customers_assigned"
    assert digest.payload["count"] == 3 and digest.payload["via"] == "public_pool"
    expect_channels(api, digest, wechat=True, wecom=True)
    assert {r.via for p in pool for r in history(api, p["id"])} == {"public_pool"}
    assert len(data["notificationData"]) == 1
    # The pool is empty now.
    assert ok(api.client(team.alice).get("/api/customers/public-pool"))["total"] == 0


@pytest.mark.parametrize("via", ("batch", "public_pool"))
def test_batches_must_hold_between_one_and_a_thousand_ids(api, team, via):
    lead = api.lead(team.manager)
    refused(assign(api, team.manager, via, [], team.alice), 422, "batch_empty")
    refused(assign(api, team.manager, via, list(range(1, 1002)), team.alice), 422, "batch_too_large")
    assert customer(api, lead["id"]).owner_id is None and notes(api) == []
    # A thousand is fine: what does not exist is reported per item.
    data = ok(assign(api, team.manager, via, [lead["id"]] + list(range(10_001, 10_999 + 1)), team.alice))
    assert [c["id"] for c in data["customers"]] == [lead["id"]] and len(data["failed"]) == 999


# ---------------------------------------------------------------------------------------------------------------
# Claim and release.


def test_alice_claims_a_pool_lead_and_releases_it_again(api, team):
    lead = api.lead(team.manager)
    alice = api.client(team.alice)

    claimed = ok(alice.post(f"/api/customers/{lead['id']}/claim"))
    assert claimed["ownerId"] == team.alice.id and claimed["inPool"] is False
    (note,) = notes(api)
    assert note.recipient_id == team.alice.id and note.kind == "customer_assigned"
    expect_channels(api, note, wechat=True, wecom=True)  # her own action: not pushed to her phone
    # Claiming it again is a no-op.
    again = ok(alice.post(f"/api/customers/{lead['id']}/claim"))
    assert again["version"] == claimed["version"] and len(notes(api)) == 1

    released = ok(alice.post(f"/api/customers/{lead['id']}/release", json={"reason": "客户无意向"}))
    assert released["inPool"] is True and released["ownerId"] is None and released["assignedAt"] is None
    assert len(notes(api)) == 1  # releasing your own lead tells nobody

    rows = ok(alice.get(f"/api/customers/{lead['id']}/assignments"))
    assert [(r["via"], r["fromUserId"], r["toUserId"]) for r in rows] == [
        ("release", team.alice.id, None),
        ("claim", None, team.alice.id),
    ]
    assert rows[0]["reason"] == "客户无意向" and rows[0]["actorName"] == "李丽" and rows[1]["toUserName"] == "李丽"
    # Alice cannot grab it straight back (the pool's reclaim cooldown); Bob can, and releases without a body.
    refused(alice.post(f"/api/customers/{lead['id']}/claim"), 409, "reclaim_cooldown")
    bob = api.client(team.bob)
    ok(bob.post(f"/api/customers/{lead['id']}/claim"))
    ok(bob.post(f"/api/customers/{lead['id']}/release"))


def test_a_claimed_lead_is_no_longer_claimable(api, team):
    lead = api.lead(team.manager)
    ok(api.client(team.alice).post(f"/api/customers/{lead['id']}/claim"))
    refused(api.client(team.bob).post(f"/api/customers/{lead['id']}/claim"), 409, "not_in_pool")
    refused(api.client(team.manager).post(f"/api/customers/{lead['id']}/claim"), 409, "not_in_pool")
    refused(api.client(team.bob).post("/api/customers/777777/claim"), 404, "customer_not_found")
    assert customer(api, lead["id"]).owner_id == team.alice.id and len(notes(api)) == 1
    # Staff may take a pool lead for themselves too.
    other = api.lead(team.admin)
    assert ok(api.client(team.manager_b).post(f"/api/customers/{other['id']}/claim"))["ownerId"] == team.manager_b.id


def test_a_manager_releases_a_team_members_lead_and_the_member_is_told(api, team):
    lead = api.lead(team.manager, assignedTo=team.alice.id)
    refused(api.client(team.bob).post(f"/api/customers/{lead['id']}/release"), 404, "customer_not_found")
    refused(api.client(team.manager_b).post(f"/api/customers/{lead['id']}/release"), 404, "customer_not_found")

    ok(api.client(team.manager).post(f"/api/customers/{lead['id']}/release", json={"reason": "长期未跟进"}))

    recycled = notes(api, team.alice, "customer_recycled")
    (note,) = recycled
    assert note.payload["reason"] == "长期未跟进" and note.payload["toUserId"] is None
    expect_channels(api, note, wechat=True, wecom=True)
    assert history(api, lead["id"])[-1].via == "release"
    refused(api.client(team.manager).post(f"/api/customers/{lead['id']}/release"), 409, "not_owned")
    refused(api.client(team.admin).post(f"/api/customers/{lead['id']}/release"), 409, "not_owned")


def test_history_is_visible_to_whoever_sees_the_lead_newest_first(api, team):
    lead = api.lead(team.manager, assignedTo=team.alice.id)
    ok(assign(api, team.manager, "miniprogram", lead["id"], team.bob))
    ok(assign(api, team.admin, "web", lead["id"], team.carol))
    rows = ok(api.client(team.admin).get(f"/api/customers/{lead['id']}/assignments"))
    assert [(r["via"], r["toUserName"], r["actorName"]) for r in rows] == [
        ("web", "孙娜", "管理员"),
        ("miniprogram", "赵强", "王经理"),
        ("web", "李丽", "王经理"),
    ]
    assert ok(api.client(team.carol).get(f"/api/customers/{lead['id']}/assignments")) == rows
    for who in (team.manager, team.alice, team.bob):
        refused(api.client(who).get(f"/api/customers/{lead['id']}/assignments"), 404, "customer_not_found")


# ---------------------------------------------------------------------------------------------------------------
# A lead taken back: its former owner follows the notice's link.


def test_a_former_owner_learns_how_a_lead_left_them_and_nothing_of_it_now(api, team):
    lead = api.lead(team.manager, name="林峰", phone="13300000001", note="预算 20 万", assignedTo=team.alice.id)
    ok(assign(api, team.manager, "web", lead["id"], team.bob))

    body = refused(api.client(team.alice).get(f"/api/customers/{lead['id']}"), 404, "customer_recycled")
    gone = body["data"]
    assert gone["customerId"] == lead["id"] and gone["via"] == "web" and gone["takenBackAt"]
    assert (gone["actorName"], gone["byYou"], gone["toPool"], gone["ruleName"]) == ("王经理", False, False, None)
    assert not {"name", "phone", "note", "ownerId", "toUserId"} & set(gone)
    assert "13300000001" not in str(body) and "赵强" not in str(body)
    # Whoever never had it is told only that there is no such lead.
    for stranger in (team.carol, team.manager_b):
        assert (
            refused(api.client(stranger).get(f"/api/customers/{lead['id']}"), 404, "customer_not_found")["data"] is None
        )
    refused(api.client(team.alice).get("/api/customers/999999"), 404, "customer_not_found")
    # The lead's other pages stay closed to her.
    refused(api.client(team.alice).get(f"/api/customers/{lead['id']}/assignments"), 404, "customer_not_found")


def test_a_lead_released_to_the_pool_and_claimed_by_another_says_who_released_it(api, team):
    lead = api.lead(team.manager, assignedTo=team.alice.id)
    ok(api.client(team.alice).post(f"/api/customers/{lead['id']}/release", json={"reason": "客户无意向"}))
    assert ok(api.client(team.alice).get(f"/api/customers/{lead['id']}"))["inPool"] is True  # the pool: she sees it
    ok(api.client(team.bob).post(f"/api/customers/{lead['id']}/claim"))
    gone = refused(api.client(team.alice).get(f"/api/customers/{lead['id']}"), 404, "customer_recycled")["data"]
    assert (gone["via"], gone["byYou"], gone["toPool"], gone["reason"]) == ("release", True, True, "客户无意向")


# ---------------------------------------------------------------------------------------------------------------
# Rollback: an ownership change and its notification are one transaction.


def snapshot(api: Any, lead_ids: list[int]) -> dict[str, Any]:
    return {
        "owners": {i: (customer(api, i).owner_id, customer(api, i).version) for i in lead_ids},
        "history": count(api, Assignment),
        "notifications": count(api, Notification),
        "deliveries": count(api, Delivery),
    }


def test_a_failure_after_the_owner_changed_leaves_no_history_and_no_notification(api, team):
    lead = api.lead(team.manager, assignedTo=team.bob.id)
    before = snapshot(api, [lead["id"]])
    woken: list[set[int]] = []
    listener: Callable[[set[int]], None] = woken.append
    api.ctx.signals.subscribe(listener)
    try:
        with pytest.raises(RuntimeError, match="after the change"):
            with api.ctx.db.write() as s:
                row = s.get(Customer, lead["id"])
                alice, manager = s.get(User, team.alice.id), s.get(User, team.manager.id)
                result = change_owner(api.ctx, s, actor=manager, moves=[Move(row, alice)], via="web")
                # Inside the transaction the change, its history row and both notifications exist (the ledger
                # writes its rows as the commit's last step: written here early, as that step would)...
                assert [c.id for c in result.changed] == [lead["id"]] and len(result.notifications) == 2
                s.flush()
                assert s.scalar(select(Customer.owner_id).where(Customer.id == lead["id"])) == team.alice.id
                assert s.scalar(select(func.count()).select_from(Notification)) == before["notifications"]
                write_prepared(s)
                assert s.scalar(select(func.count()).select_from(Notification)) == before["notifications"] + 2
                # ...then the request fails before it commits.
                raise RuntimeError("boom after the change")
    finally:
        api.ctx.signals.unsubscribe(listener)

    assert snapshot(api, [lead["id"]]) == before
    assert woken == []  # nobody was woken for notifications that never existed
    seen = ok(api.client(team.bob).get(f"/api/customers/{lead['id']}"))
    assert seen["ownerId"] == team.bob.id and seen["version"] == lead["version"]
    assert ok(api.client(team.alice).get("/api/notifications"))["items"] == []


@pytest.fixture
def alices_deliveries_refused(api, team):
    """Make the database itself refuse delivery rows for alice — the last inserts of a change that gives her a lead.

    Nothing in leadpush is patched: the owner update, the history row and the notification are written by the real
    code, then the database raises mid-transaction (as a full disk or a violated constraint would).
    """
    rid = int(team.alice.id)
    with api.ctx.db.engine.begin() as conn:
        if api.ctx.db.is_postgres:
            conn.execute(
                text(
                    "CREATE OR REPLACE FUNCTION test_refuse_delivery() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'delivery refused by test trigger'; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER test_refuse_delivery BEFORE INSERT ON deliveries FOR EACH ROW "
                    f"WHEN (NEW.recipient_id = {rid}) EXECUTE FUNCTION test_refuse_delivery()"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE TRIGGER test_refuse_delivery BEFORE INSERT ON deliveries "
                    f"WHEN NEW.recipient_id = {rid} "
                    "BEGIN SELECT RAISE(ABORT, 'delivery refused by test trigger'); END"
                )
            )
    try:
        yield
    finally:
        with api.ctx.db.engine.begin() as conn:
            if api.ctx.db.is_postgres:
                conn.execute(text("DROP TRIGGER IF EXISTS test_refuse_delivery ON deliveries"))
                conn.execute(text("DROP FUNCTION IF EXISTS test_refuse_delivery()"))
            else:
                conn.execute(text("DROP TRIGGER IF EXISTS test_refuse_delivery"))


def test_a_database_failure_mid_assignment_rolls_back_owner_history_and_notifications(
    api, team, alices_deliveries_refused
):
    single = api.lead(team.manager, assignedTo=team.bob.id)
    batch = [api.lead(team.manager, phone=f"1350000000{i}") for i in range(3)]
    ids = [single["id"]] + [b["id"] for b in batch]
    before = snapshot(api, ids)

    for via, lead_ids in (("web", single["id"]), ("miniprogram", single["id"]), ("batch", ids)):
        r = assign(api, team.manager, via, lead_ids, team.alice)
        refused(r, 500, "internal_error")
    r = assign(api, team.manager, "public_pool", [b["id"] for b in batch], team.alice)
    refused(r, 500, "internal_error")

    assert snapshot(api, ids) == before
    assert ok(api.client(team.alice).get("/api/notifications"))["items"] == []
    assert ok(api.client(team.bob).get(f"/api/customers/{single['id']}"))["ownerId"] == team.bob.id
    # Moving leads to bob is untouched by the refusal: the failures above were the database's alone.
    ok(assign(api, team.manager, "public_pool", [b["id"] for b in batch], team.bob))
    assert count(api, Assignment) == before["history"] + 3
