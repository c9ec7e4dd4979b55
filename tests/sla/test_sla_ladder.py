"""First contact (首次联系): a lead nobody opens is reminded, escalated and reassigned on exact deadlines;
opening it (an ack, the detail) stops that; speed to lead is reported and measured."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update
from support import WITHOUT_SCHEDULER, Api, holds_for, ok, refused, wait_for
from support.wsclient import WsClient

import leadpush.sla.engine as sla_engine
from leadpush.leads.models import Customer
from leadpush.sla.engine import run_due_steps


def sla_rule(api: Api, who, **body) -> dict:
    payload = {
        "name": "5分钟首次联系",
        "remindAfterMinutes": 5,
        "managerAfterMinutes": 15,
        "reassignAfterMinutes": 30,
        **body,
    }
    return ok(api.client(who).post("/api/sla-rules", json=payload), 201)


def assigned_lead(api: Api, team, to, name: str = "张三", source: str = "抖音广告") -> dict:
    lead = api.lead(team.manager, name=name, source=source)
    return ok(api.client(team.manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": to.id}))


def notes(api: Api, who) -> list[dict]:
    return ok(api.client(who).get("/api/notifications"))["items"]


def kinds(api: Api, who) -> list[str]:
    return [n["type"] for n in notes(api, who)]


def lead_as(api: Api, who, lead_id: int) -> dict:
    return ok(api.client(who).get(f"/api/customers/{lead_id}"))


def test_rules_are_managed_by_admins_and_team_managers_and_checked(api, team):
    company = sla_rule(api, team.admin)
    assert company["team"] is None and company["reassignAction"] == "next" and company["enabled"] is True
    mine = sla_rule(api, team.manager, team="A", name="A组抖音", sources=["抖音广告"], reassignAction="pool")
    assert mine["sources"] == ["抖音广告"] and mine["reassignAction"] == "pool"
    refused(
        api.client(team.manager).post("/api/sla-rules", json={"name": "x", "remindAfterMinutes": 5}), 403, "forbidden"
    )
    body = {"name": "x", "team": "A", "remindAfterMinutes": 5}
    refused(api.client(team.manager_b).post("/api/sla-rules", json=body), 403, "forbidden")
    refused(api.client(team.alice).post("/api/sla-rules", json=body), 403, "forbidden")
    bad = api.client(team.admin).post(
        "/api/sla-rules", json={"name": "x", "remindAfterMinutes": 30, "managerAfterMinutes": 10}
    )
    assert "依次增加" in refused(bad, 422, "invalid_rule")["message"]
    refused(api.client(team.admin).post("/api/sla-rules", json={"name": "x"}), 422, "invalid_rule")
    wrong = api.client(team.admin).post(
        "/api/sla-rules", json={"name": "x", "remindAfterMinutes": 5, "reassignAction": "x"}
    )
    assert wrong.status_code == 422
    refused(
        api.client(team.admin).post("/api/sla-rules", json={"name": "x", "team": "无此组", "remindAfterMinutes": 5}),
        422,
        "team_not_found",
    )
    # Managers see company-wide rules and their team's; another team's manager cannot change A's.
    assert {r["id"] for r in ok(api.client(team.manager_b).get("/api/sla-rules"))} == {company["id"]}
    refused(
        api.client(team.manager_b).patch(f"/api/sla-rules/{mine['id']}", json={"enabled": False}), 404, "rule_not_found"
    )
    off = ok(api.client(team.manager).patch(f"/api/sla-rules/{mine['id']}", json={"enabled": False}))
    assert off["enabled"] is False
    refused(api.client(team.manager).delete(f"/api/sla-rules/{company['id']}"), 403, "forbidden")
    ok(api.client(team.manager).delete(f"/api/sla-rules/{mine['id']}"))
    assert [r["id"] for r in ok(api.client(team.admin).get("/api/sla-rules"))] == [company["id"]]


def test_an_unopened_lead_is_reminded_then_escalated_then_returned_to_the_pool(api, team):
    sla_rule(api, team.admin, reassignAction="pool")
    lead = assigned_lead(api, team, team.alice, name="周杰")
    assigned = datetime.fromisoformat(lead["assignedAt"])
    assert datetime.fromisoformat(lead["slaNextAt"]) == assigned + timedelta(minutes=5)

    api.nudge(minutes=4, seconds=59)
    holds_for(lambda: kinds(api, team.alice) == ["customer_assigned"], 0.6)
    api.nudge(seconds=1)
    wait_for(lambda: kinds(api, team.alice) == ["customer_assigned", "sla_reminder"], 10)
    reminder = notes(api, team.alice)[-1]
    assert reminder["body"] == "线索「周杰」已分配 5 分钟仍未查看，请尽快联系"
    assert reminder["data"]["customerId"] == lead["id"]
    # Her strongest channel: WeCom (she has a WeCom id; not configured here, so recorded as skipped), then
    # WeChat, always in-app.
    deliveries = ok(api.client(team.admin).get("/api/deliveries", params={"notificationId": reminder["id"]}))["items"]
    planned = {d["channel"]: (d["status"], d["policy"]) for d in sorted(deliveries, key=lambda d: d["id"])}
    assert list(planned) == ["inapp", "wecom", "wechat"]
    assert planned["wecom"][0] == planned["wechat"][0] == "skipped"
    assert kinds(api, team.manager) == []

    api.nudge(minutes=10)
    wait_for(lambda: kinds(api, team.manager) == ["sla_escalated"], 10)
    escalated = notes(api, team.manager)[0]
    assert "李丽" in escalated["body"] and "15 分钟" in escalated["body"]
    assert escalated["data"]["ownerId"] == team.alice.id
    assert kinds(api, team.manager_b) == []  # another team's manager hears nothing
    assert lead_as(api, team.admin, lead["id"])["ownerId"] == team.alice.id

    api.nudge(minutes=15)
    wait_for(lambda: lead_as(api, team.admin, lead["id"])["inPool"], 10)
    history = ok(api.client(team.admin).get(f"/api/customers/{lead['id']}/assignments"))
    assert (
        history[0]["via"] == "escalation" and history[0]["toUserId"] is None and "30 分钟未查看" in history[0]["reason"]
    )
    wait_for(lambda: kinds(api, team.alice) == ["customer_assigned", "sla_reminder", "customer_recycled"])
    # Each step ran once: more looks change nothing.
    api.nudge(minutes=30)
    holds_for(lambda: kinds(api, team.alice) == ["customer_assigned", "sla_reminder", "customer_recycled"], 0.6)
    assert kinds(api, team.manager) == ["sla_escalated"]


def test_reassignment_goes_to_the_next_in_rotation_who_gets_their_own_ladder(api, team):
    # Team A's new leads go round robin (李丽, then 赵强): the rotation's next after 李丽 is 赵强.
    ok(
        api.client(team.manager).post(
            "/api/distribution-rules", json={"name": "轮流", "team": "A", "action": "round_robin"}
        ),
        201,
    )
    sla_rule(api, team.admin, remindAfterMinutes=None, managerAfterMinutes=None, reassignAfterMinutes=10)
    lead = api.lead(team.manager, name="王五")
    assert lead["ownerId"] == team.alice.id
    api.nudge(minutes=10)
    moved = wait_for(lambda: (c := lead_as(api, team.admin, lead["id"]))["ownerId"] == team.bob.id and c, 10)
    assert datetime.fromisoformat(moved["slaNextAt"]) == datetime.fromisoformat(moved["assignedAt"]) + timedelta(
        minutes=10
    )
    bob_notes = notes(api, team.bob)
    assert [(n["type"], n["data"]["via"]) for n in bob_notes] == [("customer_assigned", "escalation")]
    assert "超时未查看" in bob_notes[0]["body"]
    assert kinds(api, team.alice) == ["customer_assigned", "customer_recycled"]


def test_opening_by_ack_stops_the_ladder_and_a_digest_ack_does_not_open(api, team):
    sla_rule(api, team.admin)
    lead = assigned_lead(api, team, team.alice)
    api.nudge(minutes=2)
    [assigned_note] = notes(api, team.alice)
    # Someone else's ack of their own notices opens nothing of hers.
    ok(api.client(team.bob).post("/api/notifications/ack", json={"ids": [assigned_note["id"]]}))
    assert lead_as(api, team.manager, lead["id"])["openedAt"] is None
    ok(api.client(team.alice).post("/api/notifications/ack", json={"ids": [assigned_note["id"]]}))
    seen = lead_as(api, team.manager, lead["id"])
    assert seen["openedAt"] is not None and seen["slaNextAt"] is None
    assert datetime.fromisoformat(seen["openedAt"]) - datetime.fromisoformat(seen["assignedAt"]) == timedelta(minutes=2)
    api.nudge(minutes=40)
    holds_for(lambda: kinds(api, team.alice) == ["customer_assigned"] and kinds(api, team.manager) == [], 0.8)
    assert lead_as(api, team.alice, lead["id"])["ownerId"] == team.alice.id

    # A batch: one digest; acking it (all) opens none of its leads, opening one's detail opens that one.
    ids = [api.lead(team.manager, name=f"批量{i}")["id"] for i in range(2)]
    ok(
        api.client(team.manager).post(
            "/api/customers/batch-assign", json={"customerIds": ids, "assignedTo": team.alice.id}
        )
    )
    assert kinds(api, team.alice)[-1] == "customers_assigned"
    ok(api.client(team.alice).post("/api/notifications/ack", json={}))
    assert [lead_as(api, team.manager, i)["openedAt"] for i in ids] == [None, None]
    assert lead_as(api, team.alice, ids[0])["openedAt"] is not None
    assert lead_as(api, team.manager, ids[0])["openedAt"] is not None
    assert lead_as(api, team.manager, ids[1])["openedAt"] is None  # the manager looking opens nothing


def test_ack_over_websocket_opens_the_lead(api, team):
    sla_rule(api, team.admin)
    lead = assigned_lead(api, team, team.alice)
    [note] = notes(api, team.alice)
    ws = WsClient(api.url, team.alice.token)
    try:
        ws.send({"type": "ack", "ids": [note["id"]]})
        wait_for(lambda: lead_as(api, team.manager, lead["id"])["openedAt"] is not None, 10)
    finally:
        ws.close()


def test_a_lead_closed_before_its_step_is_left_alone(api, team):
    sla_rule(api, team.admin)
    lead = assigned_lead(api, team, team.alice)
    with api.ctx.db.write() as session:  # closed by some path that is not a follow-up (an import, a script)
        session.execute(update(Customer).where(Customer.id == lead["id"]).values(status="invalid"))
    api.nudge(minutes=40)
    wait_for(lambda: lead_as(api, team.manager, lead["id"])["slaNextAt"] is None, 10)
    assert kinds(api, team.alice) == ["customer_assigned"]
    assert lead_as(api, team.manager, lead["id"])["ownerId"] == team.alice.id


def test_first_follow_up_is_stamped_and_shown_on_the_lead(api, team):
    sla_rule(api, team.admin)
    lead = assigned_lead(api, team, team.alice)
    api.nudge(minutes=1)
    ok(api.client(team.manager).post(f"/api/customers/{lead['id']}/follow-ups", json={"content": "经理备注"}), 201)
    after_manager = lead_as(api, team.manager, lead["id"])
    # The manager's call ends the ladder, but is not her first contact.
    assert after_manager["firstFollowUpAt"] is None and after_manager["openedAt"] is None
    assert after_manager["slaNextAt"] is None
    api.nudge(minutes=2)
    ok(api.client(team.alice).post(f"/api/customers/{lead['id']}/follow-ups", json={"content": "已电话联系"}), 201)
    seen = lead_as(api, team.manager, lead["id"])
    assigned = datetime.fromisoformat(seen["assignedAt"])
    # Following up implies opening: both stamped, the ladder over.
    assert datetime.fromisoformat(seen["firstFollowUpAt"]) - assigned == timedelta(minutes=3)
    assert datetime.fromisoformat(seen["openedAt"]) - assigned == timedelta(minutes=3)
    assert seen["slaNextAt"] is None
    api.nudge(minutes=5)
    ok(api.client(team.alice).post(f"/api/customers/{lead['id']}/follow-ups", json={"content": "第二次"}), 201)
    assert lead_as(api, team.manager, lead["id"])["firstFollowUpAt"] == seen["firstFollowUpAt"]


def test_speed_to_lead_report_per_person_and_team_and_metrics(api, team):
    sla_rule(api, team.admin, managerAfterMinutes=None, reassignAfterMinutes=None)
    start = api.ctx.clock.now()
    quick = assigned_lead(api, team, team.alice, name="快")
    slow = assigned_lead(api, team, team.alice, name="慢")
    assigned_lead(api, team, team.bob, name="没看")
    api.nudge(minutes=2)
    lead_as(api, team.alice, quick["id"])
    api.nudge(minutes=8)
    lead_as(api, team.alice, slow["id"])
    ok(api.client(team.alice).post(f"/api/customers/{slow['id']}/follow-ups", json={"content": "联系上了"}), 201)
    wait_for(lambda: "sla_reminder" in kinds(api, team.bob), 10)
    end = api.ctx.clock.now() + timedelta(seconds=1)
    params = {"from": start.isoformat(), "to": end.isoformat(), "groupBy": "person"}

    report = ok(api.client(team.admin).get("/api/reports/speed-to-lead", params=params))
    rows = {r["name"]: r for r in report["rows"]}
    alice, bob = rows["李丽"], rows["赵强"]
    assert (alice["assignments"], alice["opened"], alice["unopened"]) == (2, 2, 0)
    assert (alice["medianOpenSeconds"], alice["p90OpenSeconds"]) == (120, 600)
    assert alice["medianFollowUpSeconds"] == 600 and alice["followedUp"] == 1
    assert (alice["withSla"], alice["openedWithinSla"], alice["openedWithinSlaShare"]) == (2, 1, 0.5)
    assert (bob["assignments"], bob["opened"], bob["unopened"], bob["medianOpenSeconds"]) == (1, 0, 1, None)
    assert report["total"]["assignments"] == 3

    by_team = ok(api.client(team.manager).get("/api/reports/speed-to-lead", params={**params, "groupBy": "team"}))
    assert [(r["key"], r["assignments"], r["opened"]) for r in by_team["rows"]] == [("A", 3, 2)]
    assert ok(api.client(team.manager_b).get("/api/reports/speed-to-lead", params=params))["rows"] == []
    mine = ok(api.client(team.alice).get("/api/reports/speed-to-lead", params=params))
    assert [r["name"] for r in mine["rows"]] == ["李丽"]
    refused(
        api.client(team.admin).get("/api/reports/speed-to-lead", params={**params, "to": params["from"]}),
        422,
        "invalid_range",
    )
    assert (
        api.client(team.admin).get("/api/reports/speed-to-lead", params={**params, "groupBy": "x"}).status_code == 422
    )
    naive = {**params, "from": start.replace(tzinfo=None).isoformat()}
    refused(api.client(team.admin).get("/api/reports/speed-to-lead", params=naive), 422, "invalid_range")

    metrics = api.client().get("/metrics").text
    assert 'leadpush_time_to_open_seconds_count{team="A"}' in metrics
    assert 'leadpush_time_to_open_seconds_bucket{le="120.0",team="A"}' in metrics
    assert 'leadpush_time_to_first_follow_up_seconds_count{team="A"}' in metrics
    assert 'leadpush_sla_steps_total{step="remind"}' in metrics


@pytest.mark.parametrize("source, applies", [("抖音广告", True), ("官网", False)])
def test_a_rule_applies_by_team_and_source(api, team, source, applies):
    sla_rule(api, team.manager, team="A", sources=["抖音广告"])
    sla_rule(api, team.admin, team="B", name="B组")
    lead = assigned_lead(api, team, team.alice, source=source)
    assert (lead["slaNextAt"] is not None) is applies


def test_a_claimed_lead_is_opened_at_once_and_left_out_of_the_report(api, team):
    sla_rule(api, team.admin)
    start = api.ctx.clock.now()
    lead = api.lead(team.manager, name="自己领的")
    claimed = ok(api.client(team.alice).post(f"/api/customers/{lead['id']}/claim"))
    assert claimed["openedAt"] == claimed["assignedAt"] and claimed["slaNextAt"] is None
    api.nudge(minutes=10)
    holds_for(lambda: kinds(api, team.alice) == ["customer_assigned"], 0.6)
    params = {"from": start.isoformat(), "to": api.ctx.clock.now().isoformat()}
    assert ok(api.client(team.admin).get("/api/reports/speed-to-lead", params=params))["rows"] == []


@WITHOUT_SCHEDULER
def test_schedulers_racing_run_each_step_once(api, team):
    sla_rule(api, team.admin)
    leads = [assigned_lead(api, team, team.alice, name=f"客户{i}") for i in range(5)]
    api.ctx.clock.advance(minutes=6)
    ran: list[int] = []
    racers = [threading.Thread(target=lambda: ran.append(run_due_steps(api.ctx))) for _ in range(4)]
    for t in racers:
        t.start()
    for t in racers:
        t.join(60)
    assert sum(ran) == 5
    reminders = [n for n in notes(api, team.alice) if n["type"] == "sla_reminder"]
    assert sorted(n["data"]["customerId"] for n in reminders) == sorted(lead["id"] for lead in leads)
    api.nudge(minutes=1)
    assert run_due_steps(api.ctx) == 0


@WITHOUT_SCHEDULER
def test_changing_a_rule_reschedules_its_ladders_and_switching_it_off_ends_them(api, team):
    rule = sla_rule(api, team.admin)
    lead = assigned_lead(api, team, team.alice)
    assigned = datetime.fromisoformat(lead["assignedAt"])
    ok(api.client(team.admin).patch(f"/api/sla-rules/{rule['id']}", json={"remindAfterMinutes": 3}))
    after = lead_as(api, team.manager, lead["id"])
    assert datetime.fromisoformat(after["slaNextAt"]) == assigned + timedelta(minutes=3)
    ok(api.client(team.admin).patch(f"/api/sla-rules/{rule['id']}", json={"enabled": False}))
    assert lead_as(api, team.manager, lead["id"])["slaNextAt"] is None
    api.ctx.clock.advance(minutes=60)
    assert run_due_steps(api.ctx) == 0
    assert kinds(api, team.alice) == ["customer_assigned"]


@WITHOUT_SCHEDULER
def test_a_step_that_fails_is_tried_again_a_minute_later(api, team, monkeypatch):
    sla_rule(api, team.admin)
    lead = assigned_lead(api, team, team.alice)
    api.ctx.clock.advance(minutes=5)

    def broken(*args, **kwargs):
        raise RuntimeError("the notification ledger is down")

    with monkeypatch.context() as patch:
        patch.setattr(sla_engine, "_remind", broken)
        assert run_due_steps(api.ctx) == 0
    retry_at = datetime.fromisoformat(lead_as(api, team.manager, lead["id"])["slaNextAt"])
    assert retry_at == api.ctx.clock.now() + timedelta(seconds=60)
    assert run_due_steps(api.ctx) == 0  # not before its time
    api.ctx.clock.advance(seconds=60)
    assert run_due_steps(api.ctx) == 1
    assert kinds(api, team.alice) == ["customer_assigned", "sla_reminder"]
