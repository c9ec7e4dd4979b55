"""Distribution rules: a lead that arrives without an owner goes, at once, to the person (or pool) the first
matching rule picks — skipping people who cannot take it now — and that person hears of it.

Stories told over HTTP against a real server, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from support import WITHOUT_SCHEDULER, Api, Person, ok, refused

from leadpush.assignment.service import Move, change_owner
from leadpush.leads.models import Customer
from leadpush.pools.models import Pool
from leadpush.routing.hooks import next_in_rotation, route_returned_leads

MONDAY_MORNING = datetime(2026, 3, 2, 1, 5, tzinfo=UTC)  # 09:05 on a Monday in Shanghai
WEEKDAYS_9_TO_6 = {str(d): [["09:00", "18:00"]] for d in range(1, 6)}

# ---------------------------------------------------------------------------------------------------------------
# Helpers: a rule as a manager or admin types it in, a lead as a form sends it.


def rule(api: Api, who: Person, status: int = 201, **fields: Any) -> dict:
    body = {"name": "轮流分配", **fields}
    return ok(api.client(who).post("/api/distribution-rules", json=body), status)


def lead(api: Api, who: Person, name: str = "张三", **kw: Any) -> dict:
    return api.lead(who, name=name, **kw)


def owners(leads: list[dict]) -> list[int | None]:
    return [c["ownerId"] for c in leads]


def notifications(api: Api, who: Person) -> list[dict]:
    return ok(api.client(who).get("/api/notifications", params={"after": 0}))["items"]


def dry_run(api: Api, who: Person, **body: Any) -> dict:
    return ok(api.client(who).post("/api/distribution-rules/dry-run", json=body))


def availability(api: Api, who: Person, user: Person, **body: Any) -> dict:
    return ok(api.client(who).put(f"/api/users/{user.id}/availability", json=body))


# ---------------------------------------------------------------------------------------------------------------
# Round robin, end to end.


def test_new_leads_go_round_robin_to_the_team_and_each_owner_is_notified(api, team):
    rule(api, team.manager, team="A", action="round_robin")

    leads = [lead(api, team.manager, name=f"客户{i}", phone=f"1380013800{i}") for i in range(4)]

    # Team A's salespeople, in turn (by id), from the first lead on.
    assert owners(leads) == [team.alice.id, team.bob.id, team.alice.id, team.bob.id]
    assert all(c["inPool"] is False for c in leads)
    alice_notes = notifications(api, team.alice)
    assert [n["data"]["customerId"] for n in alice_notes] == [leads[0]["id"], leads[2]["id"]]
    assert {n["type"] for n in alice_notes} == {"customer_assigned"} and alice_notes[0]["data"]["via"] == "route"
    history = ok(api.client(team.manager).get(f"/api/customers/{leads[1]['id']}/assignments"))
    assert history[0]["via"] == "route" and history[0]["reason"] == "分配规则：轮流分配"
    assert history[0]["actorId"] == team.manager.id


def test_a_batch_gives_each_person_one_digest_for_all_their_new_leads(api, team):
    rule(api, team.manager, team="A", action="round_robin")
    body = [{"name": f"客户{i}", "phone": f"1390000000{i}", "source": "抖音广告"} for i in range(5)]

    created = ok(api.client(team.manager).post("/api/customers", json=body), 201)["customers"]

    assert owners(created) == [team.alice.id, team.bob.id, team.alice.id, team.bob.id, team.alice.id]
    (alice_note,) = notifications(api, team.alice)
    assert alice_note["type"] == "customers_assigned" and alice_note["data"]["count"] == 3
    assert alice_note["data"]["customerIds"] == [created[i]["id"] for i in (0, 2, 4)]
    (bob_note,) = notifications(api, team.bob)
    assert bob_note["type"] == "customers_assigned" and bob_note["data"]["count"] == 2


def test_weighted_rotation_gives_twice_the_leads_to_the_double_weight_smoothly(api, team):
    members = [{"userId": team.alice.id, "weight": 2}, {"userId": team.bob.id, "weight": 1}]
    rule(api, team.manager, team="A", action="weighted", members=members)
    body = [{"name": f"客户{i}", "phone": f"1390000001{i}"} for i in range(6)]

    created = ok(api.client(team.manager).post("/api/customers", json=body), 201)["customers"]

    a, b = team.alice.id, team.bob.id
    assert owners(created) == [a, b, a, a, b, a]  # smooth: never three in a row for alice
    # The rotation goes on where it stopped, request after request.
    assert owners([lead(api, team.manager, phone="13900000099") for _ in range(3)]) == [a, b, a]


def test_least_loaded_gives_the_lead_to_whoever_has_the_fewest_open_leads(api, team):
    for i in range(2):
        lead(api, team.manager, phone=f"1390000002{i}", assignedTo=team.alice.id)
    rule(api, team.manager, team="A", action="least_loaded")

    got = [lead(api, team.manager, phone=f"1390000003{i}")["ownerId"] for i in range(4)]

    # bob catches up (0 → 2), then they take turns on ties.
    assert got == [team.bob.id, team.bob.id, team.alice.id, team.bob.id]


def test_conditions_pick_the_first_matching_rule_in_order_and_reorder_changes_it(api, team):
    shanghai = rule(api, team.admin, name="上海线索", regions=["上海"], action="user", targetUserId=team.alice.id)
    vip = rule(api, team.admin, name="VIP 线索", tags=["VIP", "大客户"], action="user", targetUserId=team.carol.id)
    web = rule(api, team.admin, name="官网", sources=["官网"], action="user", targetUserId=team.bob.id)

    assert lead(api, team.admin, region="上海", tags=["VIP"])["ownerId"] == team.alice.id
    assert lead(api, team.admin, region="北京", tags=["大客户"])["ownerId"] == team.carol.id
    assert lead(api, team.admin, source="官网", region="北京")["ownerId"] == team.bob.id
    unmatched = lead(api, team.admin, source="抖音广告", region="北京", tags=["普通"])
    assert unmatched["ownerId"] is None and unmatched["inPool"] is True  # no rule: stays in the pool

    ordered = ok(
        api.client(team.admin).post("/api/distribution-rules/reorder", json={"ruleIds": [vip["id"], shanghai["id"]]})
    )
    assert [r["name"] for r in ordered] == ["VIP 线索", "上海线索", "官网"]
    assert lead(api, team.admin, region="上海", tags=["VIP"])["ownerId"] == team.carol.id

    ok(api.client(team.admin).patch(f"/api/distribution-rules/{vip['id']}", json={"enabled": False}))
    assert lead(api, team.admin, region="上海", tags=["VIP"])["ownerId"] == team.alice.id
    ok(api.client(team.admin).delete(f"/api/distribution-rules/{shanghai['id']}"))
    assert lead(api, team.admin, region="上海", tags=["VIP"])["ownerId"] is None
    assert [r["name"] for r in ok(api.client(team.admin).get("/api/distribution-rules"))] == ["VIP 线索", "官网"]
    assert web["appliesOn"] == ["new"] and web["fallback"] == "pool"


def test_a_team_rule_routes_only_its_teams_leads(api, team):
    rule(api, team.manager, team="A", action="round_robin")
    # A lead created by team B's manager is team B's: team A's rule leaves it alone.
    assert lead(api, team.manager_b)["ownerId"] is None
    assert lead(api, team.manager)["ownerId"] == team.alice.id


def test_a_pool_rule_puts_the_lead_into_that_pool(api, team):
    with api.ctx.db.write() as session:
        pool = Pool(name="A 组公海", team="A", embargo_minutes=0, hide_phone=False)
        session.add(pool)
        session.flush()
        pool_id = pool.id
    made = rule(api, team.manager, team="A", action="pool", targetPoolId=pool_id)
    assert made["targetPoolName"] == "A 组公海"

    got = lead(api, team.manager)

    assert got["ownerId"] is None and got["poolId"] == pool_id
    history = ok(api.client(team.manager).get(f"/api/customers/{got['id']}/assignments"))
    assert history[0]["via"] == "route" and history[0]["toUserId"] is None


def test_people_who_cannot_take_a_lead_now_are_skipped_and_the_dry_run_says_why(api, team):
    api.ctx.clock.set(MONDAY_MORNING)
    dave = api.user("周杰", "sales", "A")
    erin = api.user("吴敏", "sales", "A")
    admin = api.client(team.admin)
    ok(admin.patch(f"/api/users/{team.alice.id}", json={"capacity": 1}))
    lead(api, team.manager, phone="13900000040", assignedTo=team.alice.id)  # alice is full
    ok(admin.patch(f"/api/users/{team.bob.id}", json={"active": False}))
    availability(api, dave, dave, workingHours={"6": [["10:00", "16:00"]]})  # Saturdays only
    availability(api, team.manager, erin, leaveFrom="2026-03-01T00:00:00+08:00", leaveUntil="2026-03-09T00:00:00+08:00")
    rule(api, team.manager, team="A", action="round_robin", fallback="pool")

    answer = dry_run(api, team.manager, source="抖音广告")

    assert answer["matched"] is True and answer["outcome"] == "fallback_pool" and answer["assigneeId"] is None
    reasons = {c["name"]: (c["status"], c["reason"], c["reasonText"]) for c in answer["candidates"]}
    assert reasons == {
        "李丽": ("skipped", "at_capacity", "线索已达上限"),
        "赵强": ("skipped", "inactive", "已停用"),
        "周杰": ("skipped", "off_hours", "不在工作时间"),
        "吴敏": ("skipped", "on_leave", "正在休假"),
    }
    assert "全公司公海" in answer["summary"]
    assert lead(api, team.manager)["ownerId"] is None  # the fallback: the company pool

    # Saturday 11:00 in Shanghai: dave is at work.
    api.ctx.clock.set(datetime(2026, 3, 7, 3, 0, tzinfo=UTC))
    answer = dry_run(api, team.manager)
    assert answer["assigneeName"] == "周杰" and answer["summary"] == "规则「轮流分配」：周杰 会收到这条线索"
    assert lead(api, team.manager)["ownerId"] == dave.id


def test_the_fallback_person_gets_the_lead_when_nobody_in_the_rotation_can(api, team):
    ok(api.client(team.admin).patch(f"/api/users/{team.alice.id}", json={"active": False}))
    ok(api.client(team.admin).patch(f"/api/users/{team.bob.id}", json={"active": False}))
    rule(api, team.manager, team="A", action="round_robin", fallback="user", fallbackUserId=team.manager.id)

    assert dry_run(api, team.manager)["outcome"] == "fallback_user"
    got = lead(api, team.manager)

    assert got["ownerId"] == team.manager.id
    (note,) = notifications(api, team.manager)
    assert note["data"]["customerId"] == got["id"]


def test_a_named_person_unavailable_sends_the_lead_to_the_fallback_pool(api, team):
    rule(api, team.manager, team="A", action="user", targetUserId=team.bob.id)
    assert lead(api, team.manager)["ownerId"] == team.bob.id
    availability(api, team.bob, team.bob, leaveFrom=None, leaveUntil="2099-01-01T00:00:00+08:00")
    got = lead(api, team.manager)
    assert got["ownerId"] is None and got["inPool"] is True


def test_the_dry_run_does_not_advance_the_rotation(api, team):
    rule(api, team.manager, team="A", action="round_robin")
    for _ in range(3):
        assert dry_run(api, team.manager)["assigneeId"] == team.alice.id
    assert lead(api, team.manager)["ownerId"] == team.alice.id
    assert dry_run(api, team.manager)["assigneeId"] == team.bob.id
    assert dry_run(api, team.manager, team="B")["outcome"] == "no_rule"


def test_a_released_lead_is_routed_again_but_never_straight_back_to_who_let_it_go(api, team):
    rule(api, team.manager, name="释放后重新分配", team="A", action="round_robin", appliesOn=["released"])
    got = lead(api, team.manager, assignedTo=team.alice.id)
    assert lead(api, team.manager)["ownerId"] is None  # the rule is for released leads only

    released = ok(api.client(team.alice).post(f"/api/customers/{got['id']}/release", json={"reason": "联系不上"}))

    # Alice is first in the rotation but just gave it up: bob gets it.
    assert ok(api.client(team.bob).get(f"/api/customers/{got['id']}"))["ownerId"] == team.bob.id
    assert released["id"] == got["id"]
    (note,) = notifications(api, team.bob)
    assert note["data"]["customerId"] == got["id"] and note["data"]["via"] == "route"


@WITHOUT_SCHEDULER
def test_a_lead_recycled_by_automatic_transfer_is_routed_by_a_recycled_rule(api, team):
    admin = api.client(team.admin)
    transfer = {"name": "24小时未跟进", "team": "A", "condition": "no_follow_up_after_assign", "thresholdHours": 24}
    ok(admin.post("/api/auto-transfer/rules", json={**transfer, "action": "public_pool"}), 201)
    rule(api, team.admin, name="收回后轮流", team="A", action="round_robin", appliesOn=["recycled"])
    got = lead(api, team.manager, assignedTo=team.alice.id)

    api.ctx.clock.advance(hours=25)
    ok(admin.post("/api/auto-transfer/run", json={"dryRun": False}))

    # Recycled from alice (cooldown): the rotation hands it to bob.
    assert ok(admin.get(f"/api/customers/{got['id']}"))["ownerId"] == team.bob.id


def test_next_in_rotation_gives_the_next_available_person_excluding_some(api, team):
    rule(api, team.manager, team="A", action="round_robin")
    dave = api.user("周杰", "sales", "A")
    got = lead(api, team.manager)
    assert got["ownerId"] == team.alice.id
    with api.ctx.db.write() as session:
        customer = session.get(Customer, got["id"])
        assert customer is not None
        nxt = next_in_rotation(
            session, customer, exclude={team.bob.id}, settings=api.ctx.settings, now=api.ctx.clock.now()
        )
        assert nxt is not None and nxt.id == dave.id
    # The turn was taken: the next new lead goes to alice again (after dave).
    assert lead(api, team.manager)["ownerId"] == team.alice.id


# ---------------------------------------------------------------------------------------------------------------
# Availability and who may set it.


def test_people_set_their_own_hours_their_manager_theirs_nobody_else(api, team):
    api.ctx.clock.set(MONDAY_MORNING)
    got = availability(api, team.alice, team.alice, workingHours=WEEKDAYS_9_TO_6)
    assert got["availableNow"] is True and got["workingHours"]["1"] == [["09:00", "18:00"]]
    assert got["timezone"] == "Asia/Shanghai"
    got = availability(api, team.manager, team.alice, workingHours={"2": [["09:00", "12:00"]]})
    assert got["availableNow"] is False and got["reason"] == "off_hours"
    assert ok(api.client(team.admin).get(f"/api/users/{team.alice.id}/availability"))["reason"] == "off_hours"
    assert ok(api.client(team.alice).get(f"/api/users/{team.alice.id}/availability"))["workingHours"] == {
        "2": [["09:00", "12:00"]]
    }

    refused(api.client(team.bob).get(f"/api/users/{team.alice.id}/availability"), 403, "forbidden")
    refused(api.client(team.manager_b).put(f"/api/users/{team.alice.id}/availability", json={}), 403, "forbidden")
    refused(api.client(team.alice).get("/api/users/999999/availability"), 404, "user_not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"workingHours": {"1": [["25:00", "26:00"]]}},
        {"workingHours": {"1": [["18:00", "09:00"]]}},
        {"workingHours": {"8": [["09:00", "18:00"]]}},
        {"workingHours": {"1": "09:00-18:00"}},
        {"leaveFrom": "2026-03-09T00:00:00+08:00", "leaveUntil": "2026-03-01T00:00:00+08:00"},
        {"leaveFrom": "2026-03-09T00:00:00"},
        {"leaveFrom": "0001-01-01T00:00:00+08:00"},
        {"holiday": True},
    ],
)
def test_bad_availability_is_refused_with_a_chinese_message(api, team, body):
    refused(api.client(team.alice).put(f"/api/users/{team.alice.id}/availability", json=body), 422, "validation_error")


# ---------------------------------------------------------------------------------------------------------------
# Bad rules and who may manage which.


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"action": "random"}, 422, "validation_error"),
        ({"action": "round_robin", "appliesOn": ["sometimes"]}, 422, "validation_error"),
        ({"action": "round_robin", "appliesOn": []}, 422, "validation_error"),
        ({"action": "round_robin", "fallback": "nobody"}, 422, "validation_error"),
        ({"action": "round_robin", "sources": [""]}, 422, "validation_error"),
        ({"action": "weighted", "team": "A"}, 422, "invalid_rule"),
        ({"action": "round_robin"}, 422, "invalid_rule"),  # company-wide without members
        ({"action": "user"}, 422, "invalid_rule"),
        ({"action": "user", "targetUserId": 999999}, 422, "user_not_found"),
        ({"action": "pool", "targetPoolId": 999999}, 422, "pool_not_found"),
        ({"action": "round_robin", "team": "A", "fallback": "user"}, 422, "invalid_rule"),
        ({"action": "round_robin", "team": "Z"}, 422, "team_not_found"),
        ({"action": "weighted", "members": [{"userId": 1, "weight": 0}]}, 422, "validation_error"),
        ({"action": "weighted", "members": [{"userId": 1}, {"userId": 1}]}, 422, "validation_error"),
    ],
)
def test_an_incomplete_or_wrong_rule_is_refused(api, team, fields, status, code):
    refused(api.client(team.admin).post("/api/distribution-rules", json={"name": "规则", **fields}), status, code)


def test_managers_manage_their_teams_rules_only(api, team):
    manager = api.client(team.manager)
    refused(manager.post("/api/distribution-rules", json={"name": "全公司", "action": "pool"}), 403, "forbidden")
    refused(
        manager.post("/api/distribution-rules", json={"name": "B 组", "team": "B", "action": "round_robin"}),
        403,
        "forbidden",
    )
    members = [{"userId": team.carol.id}]
    refused(
        manager.post(
            "/api/distribution-rules", json={"name": "A", "team": "A", "action": "weighted", "members": members}
        ),
        403,
        "forbidden",
    )
    company = rule(api, team.admin, name="全公司", action="user", targetUserId=team.carol.id)
    team_b = rule(api, team.manager_b, name="B 组轮流", team="B", action="round_robin")
    mine = rule(api, team.manager, name="A 组轮流", team="A", action="round_robin")

    # A manager sees company-wide rules and their own team's, and changes only their team's.
    assert {r["name"] for r in ok(manager.get("/api/distribution-rules"))} == {"全公司", "A 组轮流"}
    refused(manager.patch(f"/api/distribution-rules/{company['id']}", json={"enabled": False}), 403, "forbidden")
    refused(manager.delete(f"/api/distribution-rules/{team_b['id']}"), 404, "rule_not_found")
    refused(manager.patch(f"/api/distribution-rules/{mine['id']}", json={"team": None}), 403, "forbidden")
    refused(api.client(team.alice).get("/api/distribution-rules"), 403, "forbidden")
    refused(api.client(team.alice).post("/api/distribution-rules/dry-run", json={}), 403, "forbidden")
    refused(manager.get("/api/distribution-rules/999999"), 404, "rule_not_found")
    refused(manager.patch(f"/api/distribution-rules/{mine['id']}", json={"action": "weighted"}), 422, "invalid_rule")
    changed = ok(
        manager.patch(
            f"/api/distribution-rules/{mine['id']}",
            json={"members": [{"userId": team.bob.id, "weight": 3}], "action": "weighted"},
        )
    )
    assert [(m["name"], m["weight"]) for m in changed["members"]] == [("赵强", 3)]
    # The company-wide rule comes first (position 1); once an admin removes it, the team's rule decides.
    assert lead(api, team.manager)["ownerId"] == team.carol.id
    ok(api.client(team.admin).delete(f"/api/distribution-rules/{company['id']}"))
    assert lead(api, team.manager)["ownerId"] == team.bob.id


def test_a_team_with_distribution_rules_is_not_deleted(api, team):
    admin = api.client(team.admin)
    c = ok(admin.post("/api/teams", json={"name": "C"}), 201)
    made = rule(api, team.admin, name="C 组入池", team="C", action="pool")
    body = refused(admin.delete(f"/api/teams/{c['id']}"), 409, "team_not_empty")
    assert "1 条分配规则" in body["message"]
    ok(admin.delete(f"/api/distribution-rules/{made['id']}"))
    ok(admin.delete(f"/api/teams/{c['id']}"))


def test_a_lead_an_escalation_took_back_is_routed_by_a_recycled_rule(api, team):
    rule(api, team.manager, name="收回后轮流", team="A", action="round_robin", appliesOn=["recycled"])
    got = lead(api, team.manager, assignedTo=team.alice.id)
    with api.ctx.db.write() as session:  # as the SLA engine does: back to the pool, then routing
        customer = session.get(Customer, got["id"])
        assert customer is not None
        back = change_owner(api.ctx, session, actor=None, moves=[Move(customer, None)], via="escalation")
        routed = route_returned_leads(api.ctx, session, back.changed, via="escalation")
        assert routed is not None and [c.owner_id for c in routed.changed] == [team.bob.id]
    assert ok(api.client(team.manager).get(f"/api/customers/{got['id']}"))["ownerId"] == team.bob.id
