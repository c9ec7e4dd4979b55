"""Pools per team: who sees and claims which pool, its claim limit, cooldown, embargo and hidden phones, where a
released or transferred lead goes back to, and the company pool (公司公海) working as it always did."""

from __future__ import annotations

from collections import Counter

from support import Api, wait_for
from support.api import ok, refused
from support.leads import assign, at_once, notes
from support.wsclient import WsClient


def new_pool(api: Api, who, **body) -> dict:
    return ok(api.client(who).post("/api/pools", json={"name": "A组线索池", "team": "A", **body}), 201)


def pooled(api: Api, team, name: str = "张三", phone: str = "13800138000", owner=None) -> dict:
    """A lead back in its owner's pool: created for `owner` (the team A manager by default), then released."""
    owner = owner or team.manager
    lead = api.lead(team.admin, name=name, phone=phone, assignedTo=owner.id)
    return ok(api.client(owner).post(f"/api/customers/{lead['id']}/release", json={}))


def pool_page(api: Api, who, **query) -> dict:
    return ok(api.client(who).get("/api/customers/public-pool", params=query))


def pool_ids(api: Api, who, **query) -> list[int]:
    return [c["id"] for c in pool_page(api, who, **query)["items"]]


def pools(api: Api, who) -> dict:
    """GET /api/pools by name."""
    return {p["name"]: p for p in ok(api.client(who).get("/api/pools"))}


def claim(api: Api, who, lead: dict):
    return api.client(who).post(f"/api/customers/{lead['id']}/claim")


# ---------------------------------------------------------------------------------------------------------------
# Who sees which pool.


def test_a_team_pool_is_seen_and_claimed_by_its_team_its_members_and_admins_only(api, team):
    pool = new_pool(api, team.admin)
    lead = pooled(api, team)
    assert lead["poolId"] == pool["id"] and lead["poolName"] == "A组线索池" and lead["inPool"] is True

    for who in (team.alice, team.bob, team.manager, team.admin):
        assert lead["id"] in pool_ids(api, who)
        assert lead["id"] in pool_ids(api, who, poolId=str(pool["id"]))
        assert ok(api.client(who).get(f"/api/customers/{lead['id']}"))["poolName"] == "A组线索池"
    for who in (team.carol, team.manager_b):
        assert lead["id"] not in pool_ids(api, who)
        assert lead["id"] not in [c["id"] for c in ok(api.client(who).get("/api/customers?inPool=true"))["items"]]
        refused(api.client(who).get(f"/api/customers/{lead['id']}"), 404, "customer_not_found")
        refused(api.client(who).get("/api/customers/public-pool", params={"poolId": pool["id"]}), 404, "pool_not_found")
        refused(claim(api, who, lead), 404, "customer_not_found")
        assert list(pools(api, who)) == ["公司公海"]
    data = ok(assign(api, team.manager_b, "public_pool", lead["id"], team.carol))
    assert data["failed"] == [{"customerId": lead["id"], "code": "customer_not_found", "message": "线索不存在"}]

    # Carol joins the pool as a member: she sees and claims it.
    ok(api.client(team.manager).post(f"/api/pools/{pool['id']}/members", json={"userId": team.carol.id}))
    assert pools(api, team.carol)["A组线索池"]["myRole"] == "member"
    assert lead["id"] in pool_ids(api, team.carol, poolId=str(pool["id"]))
    assert ok(claim(api, team.carol, lead))["ownerId"] == team.carol.id


def test_the_listing_without_a_pool_shows_every_pool_the_caller_may_see_and_company_narrows_it(api, team):
    pool = new_pool(api, team.admin)
    in_team = pooled(api, team, name="团队池线索")
    company = api.lead(team.admin, name="公海线索")
    assert company["poolId"] is None and company["poolName"] == "公司公海"

    assert set(pool_ids(api, team.alice)) == {in_team["id"], company["id"]}
    assert pool_ids(api, team.alice, poolId="company") == [company["id"]]
    assert pool_ids(api, team.alice, poolId=str(pool["id"])) == [in_team["id"]]
    assert pool_ids(api, team.carol) == [company["id"]]
    for bad in ("0", "abc", "-1", "99999999999"):
        r = api.client(team.alice).get("/api/customers/public-pool", params={"poolId": bad})
        assert r.status_code == 422, r.text
    refused(api.client(team.alice).get("/api/customers/public-pool", params={"poolId": "777"}), 404, "pool_not_found")


# ---------------------------------------------------------------------------------------------------------------
# Where leads go back to.


def test_a_release_goes_to_the_owners_team_pool_the_first_one_else_to_the_company_pool(api, team):
    first = new_pool(api, team.admin)
    new_pool(api, team.admin, name="A组第二池")
    alice_lead = pooled(api, team, owner=team.alice)
    assert alice_lead["poolId"] == first["id"]
    carol_lead = pooled(api, team, owner=team.carol)  # team B has no pool
    assert carol_lead["poolId"] is None and carol_lead["poolName"] == "公司公海"
    # A manager releasing a member's lead sends it to the member's team pool too.
    lead = api.lead(team.admin, assignedTo=team.bob.id)
    r = api.client(team.manager).post(f"/api/customers/{lead['id']}/release", json={})
    assert ok(r)["poolId"] == first["id"] and r.json()["message"] == "已释放到线索池「A组线索池」"


def test_an_automatic_transfer_to_the_pool_goes_to_the_owners_team_pool(api, team):
    pool = new_pool(api, team.admin)
    r = api.client(team.admin).post(
        "/api/auto-transfer/rules",
        json={
            "name": "1小时未跟进退回",
            "condition": "no_follow_up_after_assign",
            "thresholdHours": 1,
            "action": "public_pool",
        },
    )
    assert r.status_code == 201, r.text
    lead = api.lead(team.admin, assignedTo=team.alice.id)
    api.ctx.clock.advance(hours=2)
    api.ctx.signals.notifications_committed(set())

    def back_in_pool():
        c = ok(api.client(team.admin).get(f"/api/customers/{lead['id']}"))
        return c if c["ownerId"] is None else None

    moved = wait_for(back_in_pool)
    assert moved["poolId"] == pool["id"] and moved["poolName"] == "A组线索池"


def test_deleting_a_pool_moves_its_leads_to_the_company_pool(api, team):
    pool = new_pool(api, team.admin)
    lead = pooled(api, team)
    r = api.client(team.manager).delete(f"/api/pools/{pool['id']}")
    data = ok(r)
    assert data["movedToCompanyPool"] == 1 and "公司公海" in r.json()["message"]
    now = ok(api.client(team.carol).get(f"/api/customers/{lead['id']}"))
    assert now["poolId"] is None and now["poolName"] == "公司公海" and now["inPool"] is True
    refused(api.client(team.admin).get(f"/api/pools/{pool['id']}"), 404, "pool_not_found")


# ---------------------------------------------------------------------------------------------------------------
# Managing pools.


def test_admins_manage_every_pool_managers_their_own_teams_and_sales_none(api, team):
    refused(api.client(team.alice).post("/api/pools", json={"name": "x", "team": "A"}), 403, "forbidden")
    refused(api.client(team.manager).post("/api/pools", json={"name": "x", "team": "B"}), 403, "forbidden")
    refused(api.client(team.manager).post("/api/pools", json={"name": "x"}), 403, "forbidden")
    refused(api.client(team.admin).post("/api/pools", json={"name": "x", "team": "无此团队"}), 422, "team_not_found")
    pool = new_pool(api, team.manager, claimDailyLimit=3, cooldownHours=2, embargoMinutes=10, hidePhone=True)
    assert (
        pool["team"],
        pool["claimDailyLimit"],
        pool["cooldownHours"],
        pool["embargoMinutes"],
        pool["hidePhone"],
    ) == ("A", 3, 2, 10, True)
    assert pool["canManage"] and pool["canHandOut"]
    refused(api.client(team.admin).post("/api/pools", json={"name": "A组线索池"}), 409, "pool_name_taken")
    # Two admins creating the same name at once: one pool, the other told why, never a 500.
    twice = at_once([lambda c=api.client(team.admin): c.post("/api/pools", json={"name": "同名池"}) for _ in range(4)])
    assert sorted(r.status_code for r in twice) == [201, 409, 409, 409], [r.text for r in twice]
    for bad in (
        {"name": ""},
        {"name": "x\ny"},
        {"name": "x", "claimDailyLimit": -1},
        {"name": "x", "embargoMinutes": -5},
        {"name": "x", "hidePhone": "maybe"},
        {"name": "x", "extra": 1},
    ):
        r = api.client(team.admin).post("/api/pools", json=bad)
        assert r.status_code == 422 and r.json()["success"] is False, r.text

    # Manager B neither sees nor edits team A's pool; manager A edits it, null = back to the deployment's setting.
    refused(api.client(team.manager_b).patch(f"/api/pools/{pool['id']}", json={"name": "y"}), 404, "pool_not_found")
    refused(api.client(team.alice).patch(f"/api/pools/{pool['id']}", json={"name": "y"}), 403, "forbidden")
    edited = ok(
        api.client(team.manager).patch(f"/api/pools/{pool['id']}", json={"claimDailyLimit": None, "name": "A池"})
    )
    assert edited["name"] == "A池" and edited["claimDailyLimit"] is None
    assert edited["effectiveClaimDailyLimit"] == api.ctx.settings.claim_daily_limit and edited["hidePhone"] is True
    refused(api.client(team.manager).patch(f"/api/pools/{pool['id']}", json={"team": "B"}), 403, "forbidden")

    # Members and pool admins.
    members = api.client(team.manager)
    refused(members.post(f"/api/pools/{pool['id']}/members", json={"userId": 999999}), 404, "user_not_found")
    r = members.post(f"/api/pools/{pool['id']}/members", json={"userId": team.carol.id, "role": "owner"})
    assert r.status_code == 422
    ok(members.post(f"/api/pools/{pool['id']}/members", json={"userId": team.carol.id, "role": "admin"}))
    got = ok(members.get(f"/api/pools/{pool['id']}"))
    assert [(m["userId"], m["role"]) for m in got["members"]] == [(team.carol.id, "admin")]
    ok(members.delete(f"/api/pools/{pool['id']}/members/{team.carol.id}"))
    refused(members.delete(f"/api/pools/{pool['id']}/members/{team.carol.id}"), 404, "member_not_found")
    refused(api.client(team.carol).get(f"/api/pools/{pool['id']}"), 404, "pool_not_found")


def test_a_pool_admin_hands_out_the_pools_leads_to_its_users_only(api, team):
    pool = new_pool(api, team.admin)
    lead = pooled(api, team)
    # Carol (team B, a salesperson) is made the pool's admin: she may hand its leads out, to its users.
    ok(api.client(team.admin).post(f"/api/pools/{pool['id']}/members", json={"userId": team.carol.id, "role": "admin"}))
    dave = api.user("周伟", "sales", "B")
    # Whom she may give them to: the pool's users (team A and its members), active ones.
    names = [u["name"] for u in ok(api.client(team.carol).get(f"/api/pools/{pool['id']}/assignees"))]
    assert names == ["王经理", "李丽", "赵强", "孙娜"]
    refused(api.client(team.bob).get(f"/api/pools/{pool['id']}/assignees"), 403, "forbidden")
    refused(assign(api, team.carol, "web", lead["id"], dave), 403, "forbidden")
    data = ok(assign(api, team.carol, "public_pool", lead["id"], dave))
    assert data["failed"][0]["code"] == "forbidden"
    ok(assign(api, team.carol, "public_pool", lead["id"], team.alice))
    # Still no hand-outs of other leads for her: the company pool's, or a colleague's.
    other = api.lead(team.admin)
    refused(assign(api, team.carol, "web", other["id"], team.alice), 403, "forbidden")
    # Bob, a plain team member, hands out nothing.
    refused(assign(api, team.bob, "public_pool", lead["id"], team.bob), 403, "forbidden")


def test_a_team_with_a_pool_is_not_deleted_from_under_it(api, team):
    ok(api.client(team.admin).post("/api/teams", json={"name": "C"}), 201)
    new_pool(api, team.admin, name="C池", team="C")
    teams = {t["name"]: t for t in ok(api.client(team.admin).get("/api/teams"))}
    r = api.client(team.admin).delete(f"/api/teams/{teams['C']['id']}")
    refused(r, 409, "team_not_empty")
    assert "线索池" in r.json()["message"]


# ---------------------------------------------------------------------------------------------------------------
# Claim limit, cooldown, embargo.


def test_the_daily_claim_limit_is_counted_per_pool(api, team, monkeypatch):
    monkeypatch.setattr(api.ctx.settings, "claim_daily_limit", 1)
    new_pool(api, team.admin, claimDailyLimit=2)
    leads = [pooled(api, team, name=f"团队{i}") for i in range(3)]
    company = [api.lead(team.admin, name=f"公海{i}") for i in range(2)]

    ok(claim(api, team.alice, leads[0]))
    ok(claim(api, team.alice, company[0]))  # the company pool's own count
    assert pools(api, team.alice)["A组线索池"]["claimsLeftToday"] == 1
    ok(claim(api, team.alice, leads[1]))
    r = refused(claim(api, team.alice, leads[2]), 409, "claim_limit_reached")
    assert "A组线索池" in r["message"]
    refused(claim(api, team.alice, company[1]), 409, "claim_limit_reached")
    mine = pools(api, team.alice)
    assert (mine["A组线索池"]["claimsLeftToday"], mine["A组线索池"]["claimedToday"]) == (0, 2)
    assert (mine["公司公海"]["claimsLeftToday"], mine["公司公海"]["effectiveClaimDailyLimit"]) == (0, 1)
    row = {c["id"]: c for c in pool_page(api, team.alice)["items"]}[leads[2]["id"]]
    assert row["canClaim"] is False and row["claimBlock"] == "claim_limit"
    # Bob has his own count; tomorrow in LEADPUSH_TIMEZONE Alice's starts over.
    assert {c["id"]: c for c in pool_page(api, team.bob)["items"]}[leads[2]["id"]]["canClaim"] is True
    api.ctx.clock.advance(days=1)
    ok(claim(api, team.alice, leads[2]))


def test_concurrent_claims_stop_exactly_at_a_pools_limit(api, team):
    new_pool(api, team.admin, claimDailyLimit=5)
    ids = [c["id"] for c in (pooled(api, team, name=f"并发{i}") for i in range(16))]
    clients = [api.client(team.alice) for _ in ids]
    responses = at_once(
        [(lambda c=c, i=i: c.post(f"/api/customers/{i}/claim")) for c, i in zip(clients, ids, strict=True)]
    )
    assert Counter(r.status_code for r in responses) == {200: 5, 409: 11}, Counter(r.text for r in responses)
    for r in responses:
        if r.status_code == 409:
            refused(r, 409, "claim_limit_reached")
    assert ok(api.client(team.alice).get("/api/customers", params={"owner": "me"}))["total"] == 5


def test_the_previous_owner_cooldown_holds_for_claims_and_for_every_kind_of_assignment(api, team):
    new_pool(api, team.admin, cooldownHours=2)
    leads = [pooled(api, team, owner=team.alice, name=f"冷却{i}") for i in range(2)]
    refused(claim(api, team.alice, leads[0]), 409, "reclaim_cooldown")
    row = {c["id"]: c for c in pool_page(api, team.alice)["items"]}[leads[0]["id"]]
    assert row["canClaim"] is False and row["claimBlock"] == "cooldown"

    told = len(notes(api, team.alice))
    r = refused(assign(api, team.manager, "web", leads[0]["id"], team.alice), 409, "previous_owner_cooldown")
    assert "李丽" in r["message"] and "冷却" in r["message"]
    refused(assign(api, team.admin, "miniprogram", leads[0]["id"], team.alice), 409, "previous_owner_cooldown")
    for via in ("batch", "public_pool"):
        data = ok(assign(api, team.manager, via, [c["id"] for c in leads], team.alice))
        assert {f["code"] for f in data["failed"]} == {"previous_owner_cooldown"} and len(data["failed"]) == 2
    assert len(notes(api, team.alice)) == told  # nothing happened, nobody was told
    # Anyone else may have it; and after two hours Alice may too.
    ok(assign(api, team.manager, "web", leads[1]["id"], team.bob))
    api.ctx.clock.advance(hours=2, minutes=1)
    assert ok(claim(api, team.alice, leads[0]))["ownerId"] == team.alice.id


def test_a_pool_without_cooldown_lets_a_lead_go_straight_back_and_the_company_pool_keeps_the_setting(api, team):
    new_pool(api, team.admin, cooldownHours=0)
    lead = pooled(api, team, owner=team.alice)
    ok(claim(api, team.alice, lead))
    # Team B has no pool: the company pool's cooldown (LEADPUSH_RECLAIM_COOLDOWN_HOURS) applies, to claims and
    # to hand-outs alike.
    carols = pooled(api, team, owner=team.carol)
    refused(claim(api, team.carol, carols), 409, "reclaim_cooldown")
    data = ok(assign(api, team.manager_b, "public_pool", carols["id"], team.carol))
    assert data["failed"][0]["code"] == "previous_owner_cooldown"


def test_newly_pooled_leads_wait_out_the_embargo_but_managers_may_hand_them_out(api, team):
    new_pool(api, team.admin, embargoMinutes=30)
    leads = [pooled(api, team, name=f"保护{i}") for i in range(2)]
    assert leads[0]["embargoUntil"] is not None
    r = refused(claim(api, team.bob, leads[0]), 409, "pool_embargo")
    assert "30 分钟后" in r["message"]
    row = {c["id"]: c for c in pool_page(api, team.bob)["items"]}[leads[0]["id"]]
    assert (
        row["canClaim"] is False
        and row["claimBlock"] == "embargo"
        and row["embargoUntil"]
        and row["embargoMinutesLeft"] == 30
    )
    # The team's manager hands one out during the embargo.
    assert ok(assign(api, team.manager, "web", leads[1]["id"], team.bob))["ownerId"] == team.bob.id
    api.ctx.clock.advance(minutes=20)
    assert "10 分钟后" in refused(claim(api, team.bob, leads[0]), 409, "pool_embargo")["message"]
    api.ctx.clock.advance(minutes=10, seconds=1)
    assert ok(claim(api, team.bob, leads[0]))["ownerId"] == team.bob.id


# ---------------------------------------------------------------------------------------------------------------
# Hidden phones.


def test_a_hidden_phone_shows_nowhere_until_the_lead_is_claimed_and_the_new_owner_hears_it_in_full(api, team):
    new_pool(api, team.admin, hidePhone=True)
    lead = pooled(api, team, name="隐藏号码", phone="13812345678")
    assert lead["phone"] == "138****5678" and lead["phoneHidden"] is True  # the release's own answer

    for who in (team.alice, team.manager, team.admin):
        row = {c["id"]: c for c in pool_page(api, who)["items"]}[lead["id"]]
        assert row["phone"] == "138****5678" and row["phoneHidden"] is True
        assert ok(api.client(who).get(f"/api/customers/{lead['id']}"))["phone"] == "138****5678"
        listed = ok(api.client(who).get("/api/customers", params={"inPool": "true"}))["items"]
        assert [c["phone"] for c in listed if c["id"] == lead["id"]] == ["138****5678"]
        # Searching by any part of the number finds nothing: the search would reveal it.
        for part in ("1381234", "12345", "5678", "13812345678"):
            assert pool_ids(api, who, keyword=part) == []
            assert ok(api.client(who).get("/api/customers", params={"keyword": part}))["total"] == 0
        assert pool_ids(api, who, keyword="隐藏") == [lead["id"]]
    # Nor does an import preview warn of the number: the warning would reveal it.
    sheet = "姓名,电话\n新客户,13812345678\n".encode()
    r = api.client(team.manager).post(
        "/api/customers/import", content=sheet, headers={"Content-Type": "text/csv"}, params={"dryRun": "true"}
    )
    assert ok(r)["rows"][0]["warnings"] == []

    # The new owner's push and answer carry the real number.
    ws = WsClient(api.url, team.bob.token)
    try:
        data = ok(assign(api, team.manager, "public_pool", lead["id"], team.bob))
        assert data["customers"][0]["phone"] == "13812345678" and data["customers"][0]["phoneHidden"] is False
        (pushed,) = ws.notifications(1)
        assert pushed["type"] == "customer_assigned" and pushed["data"]["customerPhone"] == "13812345678"
    finally:
        ws.close()
    assert ok(api.client(team.bob).get(f"/api/customers/{lead['id']}"))["phone"] == "13812345678"
    assert ok(api.client(team.bob).get("/api/customers", params={"keyword": "5678"}))["total"] == 1

    # Claimed by Alice from the pool: her answer and her notification hold the number.
    other = pooled(api, team, name="另一条", phone="13900001111")
    assert other["phone"] == "139****1111"
    assert ok(claim(api, team.alice, other))["phone"] == "13900001111"
    items = ok(api.client(team.alice).get("/api/notifications"))["items"]
    assert [n["data"]["customerPhone"] for n in items if n["data"].get("customerId") == other["id"]] == ["13900001111"]


def test_the_company_pool_still_works_as_before(api, team):
    lead = api.lead(team.manager)
    assert (lead["poolId"], lead["poolName"], lead["phone"], lead["phoneHidden"]) == (
        None,
        "公司公海",
        "13800138000",
        False,
    )
    for who in (team.alice, team.carol, team.manager_b):
        assert pool_ids(api, who) == [lead["id"]]
    company = pools(api, team.alice)["公司公海"]
    assert company["id"] is None and company["company"] is True and company["canClaim"] is True
    assert company["effectiveClaimDailyLimit"] == api.ctx.settings.claim_daily_limit
    assert company["effectiveCooldownHours"] == api.ctx.settings.reclaim_cooldown_hours
    ok(claim(api, team.alice, lead))
    released = ok(api.client(team.alice).post(f"/api/customers/{lead['id']}/release", json={}))
    assert released["poolId"] is None
    refused(claim(api, team.alice, lead), 409, "reclaim_cooldown")
    ok(assign(api, team.manager_b, "public_pool", lead["id"], team.carol))
    assert pools(api, team.alice)["公司公海"]["claimedToday"] == 1
