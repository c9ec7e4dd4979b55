"""Follow-up plans (下次跟进): a salesperson sets when to contact a lead next, is reminded then on their
channels, and sees the day's plans (and the overdue ones) in one list. Time moves by the injectable clock;
the scheduler (the real one, in the running service) sends the reminders."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from support import Api, holds_for, ok, refused, wait_for
from support.leads import customer, notes

from leadpush.leads.reminders import run_due_reminders
from leadpush.notify.models import Notification

SHANGHAI = ZoneInfo("Asia/Shanghai")
# 09:00 in Shanghai on a Tuesday: "today" is 2026-03-03 there.
MORNING = datetime(2026, 3, 3, 1, 0, tzinfo=UTC)


def owned_lead(api: Api, team, to, name: str = "张三") -> dict:
    lead = api.lead(team.manager, name=name)
    ok(api.client(team.manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": to.id}))
    return lead


def local(when: datetime) -> str:
    """A time as the console's datetime field sends it: wall-clock time in LEADPUSH_TIMEZONE, no offset."""
    return when.astimezone(SHANGHAI).replace(tzinfo=None).isoformat(timespec="minutes")


def plan(api: Api, who, lead_id: int, at: datetime | str, note: str | None = None):
    body: dict = {"at": at.isoformat() if isinstance(at, datetime) else at}
    if note is not None:
        body["note"] = note
    return api.client(who).put(f"/api/customers/{lead_id}/follow-up-plan", json=body)


def reminders(api: Api, who=None) -> list[Notification]:
    return notes(api, who, kind="followup_due")


def test_the_owner_plans_a_follow_up_and_the_lead_shows_it_until_cleared(api: Api, team) -> None:
    api.ctx.clock.set(MORNING)
    lead = owned_lead(api, team, team.alice)
    at = MORNING + timedelta(hours=6)
    out = ok(plan(api, team.alice, lead["id"], local(at), "  确认报价  "))
    assert out["nextFollowUpNote"] == "确认报价"
    assert datetime.fromisoformat(out["nextFollowUpAt"]) == at  # read in LEADPUSH_TIMEZONE without an offset
    shown = ok(api.client(team.alice).get(f"/api/customers/{lead['id']}"))
    assert datetime.fromisoformat(shown["nextFollowUpAt"]) == at and shown["nextFollowUpNote"] == "确认报价"
    listed = ok(api.client(team.alice).get("/api/customers", params={"owner": "me"}))["items"][0]
    assert listed["nextFollowUpNote"] == "确认报价"
    assert customer(api, lead["id"]).follow_up_remind_at == at

    # Their manager may change it too (an offset given is kept as given).
    later = MORNING + timedelta(days=2)
    ok(plan(api, team.manager, lead["id"], later.astimezone(SHANGHAI)))
    shown = ok(api.client(team.alice).get(f"/api/customers/{lead['id']}"))
    assert datetime.fromisoformat(shown["nextFollowUpAt"]) == later and shown["nextFollowUpNote"] is None

    cleared = api.client(team.alice).delete(f"/api/customers/{lead['id']}/follow-up-plan")
    assert ok(cleared)["nextFollowUpAt"] is None and cleared.json()["message"] == "下次跟进已清除"
    assert customer(api, lead["id"]).follow_up_remind_at is None
    ok(api.client(team.alice).delete(f"/api/customers/{lead['id']}/follow-up-plan"))  # none to clear: fine


def test_a_plan_in_the_past_too_far_ahead_on_a_pooled_lead_or_someone_elses_is_refused(api: Api, team) -> None:
    api.ctx.clock.set(MORNING)
    lead = owned_lead(api, team, team.alice)
    refused(plan(api, team.alice, lead["id"], MORNING - timedelta(minutes=5)), 422, "follow_up_in_past")
    refused(plan(api, team.alice, lead["id"], MORNING + timedelta(days=367)), 422, "follow_up_too_far")
    ok(plan(api, team.alice, lead["id"], MORNING + timedelta(days=365)))
    ok(plan(api, team.alice, lead["id"], MORNING + timedelta(seconds=30)))  # within the current minute: now
    refused(plan(api, team.alice, lead["id"], MORNING + timedelta(hours=1), "很" * 201), 422, "validation_error")
    refused(plan(api, team.alice, lead["id"], "明天下午"), 422, "validation_error")
    refused(
        api.client(team.alice).put(f"/api/customers/{lead['id']}/follow-up-plan", json={"note": "x"}),
        422,
        "validation_error",
    )
    # Someone who may not follow the lead up: another salesperson (cannot see it), another team's manager.
    refused(plan(api, team.bob, lead["id"], MORNING + timedelta(hours=1)), 404, "customer_not_found")
    refused(plan(api, team.manager_b, lead["id"], MORNING + timedelta(hours=1)), 404, "customer_not_found")
    refused(api.client(team.bob).delete(f"/api/customers/{lead['id']}/follow-up-plan"), 404, "customer_not_found")
    pooled = api.lead(team.manager, name="公海客户")
    body = refused(plan(api, team.admin, pooled["id"], MORNING + timedelta(hours=1)), 409, "customer_in_pool")
    assert "公海" in body["message"]


def test_the_owner_is_reminded_at_the_planned_time_once(api: Api, team) -> None:
    api.ctx.clock.set(MORNING)
    lead = owned_lead(api, team, team.alice)
    at = MORNING + timedelta(hours=2)
    ok(plan(api, team.alice, lead["id"], at, "问一下预算"))
    api.nudge(hours=1, minutes=59)
    holds_for(lambda: reminders(api) == [])
    api.nudge(minutes=1)
    got = wait_for(lambda: reminders(api, team.alice))
    assert len(got) == 1
    items = ok(api.client(team.alice).get("/api/notifications"))["items"]
    reminder = [n for n in items if n["type"] == "followup_due"][0]
    assert reminder["title"] == "跟进提醒：客户「张三」"
    assert "问一下预算" in reminder["body"] and "11:00" in reminder["body"]
    assert reminder["data"]["customerId"] == lead["id"]
    assert reminder["data"]["note"] == "问一下预算"
    assert datetime.fromisoformat(reminder["data"]["plannedAt"]) == at
    assert got[0].dedupe_key == f"followup_due:{lead['id']}:{at.isoformat()}"
    after = customer(api, lead["id"])
    assert after.follow_up_remind_at is None and after.next_follow_up_at == at  # the plan stays, reminded
    api.nudge(hours=1)
    holds_for(lambda: len(reminders(api)) == 1)


def test_the_reminder_goes_to_whoever_owns_the_lead_then_and_a_pooled_lead_gets_none(api: Api, team) -> None:
    api.ctx.clock.set(MORNING)
    moved = owned_lead(api, team, team.alice, name="转走的")
    released = owned_lead(api, team, team.alice, name="释放的")
    for lead in (moved, released):
        ok(plan(api, team.alice, lead["id"], MORNING + timedelta(hours=1), "回访"))
    ok(api.client(team.manager).patch(f"/api/customers/{moved['id']}/assign", json={"assignedTo": team.bob.id}))
    ok(api.client(team.alice).post(f"/api/customers/{released['id']}/release", json={}))
    pooled = customer(api, released["id"])
    assert pooled.next_follow_up_at is None and pooled.follow_up_remind_at is None  # a pool has nobody to remind
    api.nudge(hours=1)
    got = wait_for(lambda: reminders(api, team.bob))
    assert got[0].payload["customerId"] == moved["id"]
    holds_for(lambda: reminders(api, team.alice) == [] and len(reminders(api)) == 1)


def test_a_follow_up_fulfils_a_plan_due_today_keeps_a_later_one_or_sets_a_new_one(api: Api, team) -> None:
    api.ctx.clock.set(MORNING)
    today = owned_lead(api, team, team.alice, name="今天的")
    later = owned_lead(api, team, team.alice, name="下周的")
    ok(plan(api, team.alice, today["id"], MORNING + timedelta(hours=5)))
    ok(plan(api, team.alice, later["id"], MORNING + timedelta(days=7)))

    def follow(lead_id: int, **extra):
        return api.client(team.alice).post(
            f"/api/customers/{lead_id}/follow-ups", json={"content": "电话沟通", **extra}
        )

    ok(follow(today["id"]), 201)  # earlier the same day: done
    ok(follow(later["id"]), 201)  # a plan for another day stays
    assert customer(api, today["id"]).next_follow_up_at is None
    assert customer(api, later["id"]).next_follow_up_at == MORNING + timedelta(days=7)
    # With a new plan: set with the follow-up; with null: cleared.
    ok(follow(today["id"], nextFollowUpAt=local(MORNING + timedelta(days=1)), nextFollowUpNote="发合同"), 201)
    shown = ok(api.client(team.alice).get(f"/api/customers/{today['id']}"))
    assert datetime.fromisoformat(shown["nextFollowUpAt"]) == MORNING + timedelta(days=1)
    assert shown["nextFollowUpNote"] == "发合同"
    ok(follow(later["id"], nextFollowUpAt=None), 201)
    assert customer(api, later["id"]).next_follow_up_at is None
    # A bad plan refuses the whole follow-up (nothing recorded).
    count = len(ok(api.client(team.alice).get(f"/api/customers/{today['id']}/follow-ups")))
    refused(follow(today["id"], nextFollowUpAt=local(MORNING - timedelta(days=1))), 422, "follow_up_in_past")
    refused(follow(today["id"], nextFollowUpNote="只有备注"), 422, "validation_error")
    assert len(ok(api.client(team.alice).get(f"/api/customers/{today['id']}/follow-ups"))) == count


def test_todays_list_has_the_days_plans_and_the_overdue_ones_by_time(api: Api, team) -> None:
    api.ctx.clock.set(MORNING)
    yesterday = owned_lead(api, team, team.alice, name="昨天没跟")
    noon = owned_lead(api, team, team.alice, name="中午")
    tomorrow = owned_lead(api, team, team.alice, name="明天")
    bobs = owned_lead(api, team, team.bob, name="赵强的")
    others = api.lead(team.manager_b, name="B组的", assignedTo=team.carol.id)  # another team's
    for lead, hours in ((yesterday, 1), (noon, 3), (tomorrow, 27), (bobs, 2)):
        ok(plan(api, team.admin, lead["id"], MORNING + timedelta(hours=hours), f"{lead['name']}的计划"))
    ok(plan(api, team.admin, others["id"], MORNING + timedelta(hours=2)))
    # A day later (Wednesday 09:30): yesterday's 10:00 plan was not followed up; noon's was.
    api.ctx.clock.set(MORNING + timedelta(days=1, minutes=30))
    ok(api.client(team.alice).post(f"/api/customers/{noon['id']}/follow-ups", json={"content": "已联系"}), 201)

    mine = ok(api.client(team.alice).get("/api/follow-up-plans"))
    assert mine["date"] == "2026-03-04" and mine["scope"] == "mine"
    assert [(i["customerName"], i["overdue"]) for i in mine["items"]] == [("昨天没跟", True), ("明天", False)]
    first = mine["items"][0]
    assert first["phone"] == "13800138000" and first["ownerName"] == "李丽" and first["note"] == "昨天没跟的计划"
    assert datetime.fromisoformat(first["plannedAt"]) == MORNING + timedelta(hours=1)

    day_one = ok(api.client(team.alice).get("/api/follow-up-plans", params={"date": "2026-03-03"}))
    assert [i["customerName"] for i in day_one["items"]] == ["昨天没跟"]  # noon's plan was done

    team_view = ok(api.client(team.manager).get("/api/follow-up-plans", params={"scope": "team", "date": "2026-03-03"}))
    assert [i["customerName"] for i in team_view["items"]] == ["昨天没跟", "赵强的"]
    everyone = ok(api.client(team.admin).get("/api/follow-up-plans", params={"scope": "team", "date": "2026-03-03"}))
    assert {i["customerName"] for i in everyone["items"]} == {"昨天没跟", "赵强的", "B组的"}
    refused(api.client(team.alice).get("/api/follow-up-plans", params={"scope": "team"}), 403, "forbidden")
    refused(api.client(team.alice).get("/api/follow-up-plans", params={"scope": "all"}), 422, "validation_error")
    refused(api.client(team.alice).get("/api/follow-up-plans", params={"date": "03/04"}), 422, "validation_error")


def test_several_schedulers_send_a_due_reminder_once(api: Api, team) -> None:
    api.ctx.clock.set(MORNING)
    leads = [owned_lead(api, team, team.alice, name=f"客户{i}") for i in range(5)]
    for lead in leads:
        ok(plan(api, team.alice, lead["id"], MORNING + timedelta(minutes=10)))
    api.ctx.clock.advance(minutes=10)  # not nudged: the racers below get there first (or the scheduler does)
    barrier = threading.Barrier(4)
    counts: list[int] = []

    def racer() -> None:
        barrier.wait(timeout=30)
        counts.append(run_due_reminders(api.ctx))

    threads = [threading.Thread(target=racer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    api.nudge()
    wait_for(lambda: len(reminders(api)) == 5)
    assert sum(counts) <= 5
    with api.ctx.db.read() as session:
        keys = session.scalars(select(Notification.dedupe_key).where(Notification.kind == "followup_due")).all()
    assert len(keys) == len(set(keys)) == 5
