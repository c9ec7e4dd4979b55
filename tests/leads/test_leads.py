"""Leads: creating one or many, finding them (each role sees its own slice), following them up."""

from __future__ import annotations

import pytest
from support.api import ok, refused
from support.leads import count, expect_channels, history, notes

from leadpush.leads.models import Customer

FIELDS = {
    "id",
    "name",
    "phone",
    "source",
    "region",
    "tags",
    "status",
    "note",
    "ownerId",
    "poolId",
    "externalId",
    "intakeSourceId",
    "duplicateOfId",
    "poolName",
    "phoneHidden",
    "embargoUntil",
    "ownerName",
    "inPool",
    "assignedAt",
    "lastFollowUpAt",
    "transferDueAt",
    "openedAt",
    "slaNextAt",
    "firstFollowUpAt",
    "nextFollowUpAt",
    "nextFollowUpNote",
    "version",
    "createdAt",
    "updatedAt",
}


def test_a_new_lead_lands_in_the_public_pool_and_tells_nobody(api, team):
    body = {"name": " 张三 ", "phone": "138-0013 (8000)", "source": "抖音广告", "note": "想要报价"}
    lead = ok(api.client(team.manager).post("/api/customers", json=body), 201)
    assert set(lead) == FIELDS
    assert (lead["name"], lead["phone"], lead["source"], lead["note"]) == (
        "张三",
        "13800138000",
        "抖音广告",
        "想要报价",
    )
    assert lead["status"] == "new" and lead["inPool"] is True and lead["ownerId"] is None
    assert (lead["region"], lead["tags"], lead["poolId"]) == ("", [], None)


def test_a_lead_keeps_its_region_and_tags_cleaned(api, team):
    body = {"name": "钱七", "phone": "13800138001", "region": " 上海 ", "tags": [" 高意向", "", "高意向", "展会"]}
    lead = ok(api.client(team.manager).post("/api/customers", json=body), 201)
    assert (lead["region"], lead["tags"]) == ("上海", ["高意向", "展会"])
    again = ok(api.client(team.manager).get(f"/api/customers/{lead['id']}"))
    assert (again["region"], again["tags"]) == ("上海", ["高意向", "展会"])
    too_many = api.client(team.manager).post("/api/customers", json={**body, "tags": [str(i) for i in range(21)]})
    assert too_many.status_code == 422
    assert lead["version"] == 1 and lead["assignedAt"] is None and lead["createdAt"]
    assert notes(api) == [] and history(api, lead["id"]) == []
    # Everyone sees it in the pool, a salesperson included.
    pool = ok(api.client(team.carol).get("/api/customers/public-pool"))
    assert [c["id"] for c in pool["items"]] == [lead["id"]] and pool["total"] == 1


def test_a_lead_created_for_alice_is_hers_and_she_is_told(api, team):
    lead = api.lead(team.manager, name="王五", assignedTo=team.alice.id)
    assert lead["ownerId"] == team.alice.id and lead["ownerName"] == "李丽" and lead["version"] == 2
    (row,) = history(api, lead["id"])
    assert (row.from_user_id, row.to_user_id, row.actor_id, row.via) == (None, team.alice.id, team.manager.id, "web")
    (note,) = notes(api)
    assert (note.recipient_id, note.kind, note.payload["customerId"]) == (
        team.alice.id,
        "customer_assigned",
        lead["id"],
    )
    expect_channels(api, note, wechat=True, wecom=True)


def test_a_list_of_leads_is_created_in_one_go_with_one_digest_per_person(api, team):
    items = [{"name": f"客户{i}", "phone": f"1391234000{i}", "source": "展会"} for i in range(4)]
    items[0]["assignedTo"] = items[1]["assignedTo"] = team.bob.id
    items[2]["assignedTo"] = team.alice.id
    created = ok(api.client(team.manager).post("/api/customers", json=items), 201)["customers"]
    assert [c["name"] for c in created] == [f"客户{i}" for i in range(4)]
    assert [c["ownerId"] for c in created] == [team.bob.id, team.bob.id, team.alice.id, None]
    assert sorted((n.recipient_id, n.kind) for n in notes(api)) == sorted(
        [(team.bob.id, "customers_assigned"), (team.alice.id, "customer_assigned")]
    )
    assert {r.via for c in created[:3] for r in history(api, c["id"])} == {"batch"}


def test_lead_lists_must_hold_between_one_and_a_thousand(api, team):
    c = api.client(team.manager)
    refused(c.post("/api/customers", json=[]), 422, "batch_empty")
    many = [{"name": "客户", "phone": "13900000000"}] * 1001
    refused(c.post("/api/customers", json=many), 422, "batch_too_large")
    assert count(api, Customer) == 0
    assert len(ok(c.post("/api/customers", json=many[:1000]), 201)["customers"]) == 1000


def test_who_may_create_leads_for_whom(api, team):
    body = {"name": "李四", "phone": "13700000000"}
    # A salesperson may create a lead for themselves (or into the pool), not for a colleague.
    mine = ok(api.client(team.alice).post("/api/customers", json={**body, "assignedTo": team.alice.id}), 201)
    assert mine["ownerId"] == team.alice.id
    refused(api.client(team.alice).post("/api/customers", json={**body, "assignedTo": team.bob.id}), 403, "forbidden")
    # A manager only within the team; nobody for someone who does not exist.
    refused(
        api.client(team.manager).post("/api/customers", json={**body, "assignedTo": team.carol.id}), 403, "forbidden"
    )
    refused(api.client(team.manager).post("/api/customers", json={**body, "assignedTo": 4040}), 404, "user_not_found")
    # One refused item refuses the whole list: nothing is half-written.
    items = [{**body, "assignedTo": team.bob.id}, {**body, "assignedTo": team.carol.id}]
    refused(api.client(team.manager).post("/api/customers", json=items), 403, "forbidden")
    assert count(api, Customer) == 1
    ok(api.client(team.admin).post("/api/customers", json={**body, "assignedTo": team.carol.id}), 201)


@pytest.fixture
def book(api, team):
    """A pool lead, and one lead each for alice, bob and carol."""

    class Book:
        pool = api.lead(team.manager, name="公海客户", phone="13100000001", source="官网")
        alices = api.lead(team.manager, name="李丽客户", phone="13100000002", source="抖音", assignedTo=team.alice.id)
        bobs = api.lead(team.manager, name="赵强客户", phone="13100000003", source="官网", assignedTo=team.bob.id)
        carols = api.lead(team.manager_b, name="孙娜客户", phone="13100000004", source="抖音", assignedTo=team.carol.id)

    return Book


def test_each_role_sees_its_own_slice_of_the_leads(api, team, book):
    def ids(person, **params):
        return {c["id"] for c in ok(api.client(person).get("/api/customers", params=params))["items"]}

    everything = {book.pool["id"], book.alices["id"], book.bobs["id"], book.carols["id"]}
    assert ids(team.admin) == everything
    assert ids(team.manager) == {book.pool["id"], book.alices["id"], book.bobs["id"]}
    assert ids(team.manager_b) == {book.pool["id"], book.carols["id"]}
    assert ids(team.alice) == {book.pool["id"], book.alices["id"]}
    assert ids(team.carol) == {book.pool["id"], book.carols["id"]}

    # One lead at a time: what you cannot see does not exist for you.
    for person, lead, visible in [
        (team.alice, book.alices, True),
        (team.alice, book.pool, True),
        (team.alice, book.bobs, False),
        (team.manager, book.bobs, True),
        (team.manager, book.carols, False),
        (team.manager_b, book.alices, False),
        (team.admin, book.carols, True),
    ]:
        for path in ("", "/follow-ups", "/assignments"):
            r = api.client(person).get(f"/api/customers/{lead['id']}{path}")
            if visible:
                ok(r)
            else:
                refused(r, 404, "customer_not_found")
    refused(api.client(team.admin).get("/api/customers/999999"), 404, "customer_not_found")


def test_filters_and_pages_narrow_the_list(api, team, book):
    def ids(**params):
        return {c["id"] for c in ok(api.client(team.admin).get("/api/customers", params=params))["items"]}

    assert ids(owner=team.alice.id) == {book.alices["id"]}
    assert ids(owner="me") == set()
    assert ids(inPool="true") == {book.pool["id"]}
    assert ids(inPool="false") == {book.alices["id"], book.bobs["id"], book.carols["id"]}
    assert ids(source="抖音") == {book.alices["id"], book.carols["id"]}
    assert ids(source="抖音", inPool="false", owner=team.carol.id) == {book.carols["id"]}
    assert ids(keyword="孙娜") == {book.carols["id"]}
    assert ids(keyword="00003") == {book.bobs["id"]}
    assert ids(keyword="%") == set() and ids(keyword="_") == set()
    ok(
        api.client(team.alice).post(
            f"/api/customers/{book.alices['id']}/follow-ups", json={"content": "已联系", "status": "following"}
        ),
        201,
    )
    assert ids(status="following") == {book.alices["id"]}
    assert ids(status="won") == set()
    # A salesperson asking for someone else's leads gets none of them.
    r = ok(api.client(team.alice).get("/api/customers", params={"owner": team.bob.id}))
    assert r["items"] == [] and r["total"] == 0
    assert {c["id"] for c in ok(api.client(team.alice).get("/api/customers", params={"owner": "me"}))["items"]} == {
        book.alices["id"]
    }

    # Pages: newest first, total counts everything that matches.
    first = ok(api.client(team.admin).get("/api/customers", params={"page": 1, "pageSize": 3}))
    second = ok(api.client(team.admin).get("/api/customers", params={"page": 2, "pageSize": 3}))
    assert (first["total"], first["page"], first["pageSize"]) == (4, 1, 3)
    assert [c["id"] for c in first["items"]] == [book.carols["id"], book.bobs["id"], book.alices["id"]]
    assert [c["id"] for c in second["items"]] == [book.pool["id"]]
    assert ok(api.client(team.admin).get("/api/customers", params={"page": 9}))["items"] == []

    c = api.client(team.admin)
    refused(c.get("/api/customers", params={"owner": "bob"}), 422, "invalid_filter")
    for bad in ({"page": 0}, {"pageSize": 201}, {"inPool": "maybe"}, {"page": "x"}):
        refused(c.get("/api/customers", params=bad), 422, "validation_error")


def test_alice_follows_up_her_lead_and_the_team_can_read_it(api, team, book):
    alice = api.client(team.alice)
    api.ctx.clock.advance(hours=2)
    first = ok(alice.post(f"/api/customers/{book.alices['id']}/follow-ups", json={"content": "电话沟通，有意向"}), 201)
    assert first["userId"] == team.alice.id and first["userName"] == "李丽" and first["status"] is None
    second = ok(
        alice.post(f"/api/customers/{book.alices['id']}/follow-ups", json={"content": "已报价", "status": "following"}),
        201,
    )
    lead = ok(alice.get(f"/api/customers/{book.alices['id']}"))
    assert lead["status"] == "following" and lead["lastFollowUpAt"] and lead["version"] == book.alices["version"] + 2
    listed = ok(api.client(team.manager).get(f"/api/customers/{book.alices['id']}/follow-ups"))
    assert [f["id"] for f in listed] == [second["id"], first["id"]]
    # Her manager may add one too; following up is not a change of owner and tells nobody.
    before = len(notes(api))
    ok(
        api.client(team.manager).post(f"/api/customers/{book.alices['id']}/follow-ups", json={"content": "经理回访"}),
        201,
    )
    assert len(notes(api)) == before and len(history(api, book.alices["id"])) == 1


def test_follow_ups_only_on_leads_you_own_or_manage(api, team, book):
    body = {"content": "跟进"}
    refused(api.client(team.alice).post(f"/api/customers/{book.pool['id']}/follow-ups", json=body), 403, "not_owner")
    refused(
        api.client(team.alice).post(f"/api/customers/{book.bobs['id']}/follow-ups", json=body),
        404,
        "customer_not_found",
    )
    refused(
        api.client(team.manager_b).post(f"/api/customers/{book.alices['id']}/follow-ups", json=body),
        404,
        "customer_not_found",
    )
    refused(api.client(team.manager).post(f"/api/customers/{book.pool['id']}/follow-ups", json=body), 403, "not_owner")
    ok(api.client(team.admin).post(f"/api/customers/{book.carols['id']}/follow-ups", json=body), 201)
    alice = api.client(team.alice)
    for bad in ({"content": "  "}, {"content": "x", "status": "sold"}, {}, {"content": "x", "extra": 1}):
        refused(alice.post(f"/api/customers/{book.alices['id']}/follow-ups", json=bad), 422, "validation_error")
    assert ok(alice.get(f"/api/customers/{book.alices['id']}"))["version"] == book.alices["version"]
