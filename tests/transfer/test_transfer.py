"""Automatic transfer (自动流转): rules, exact deadlines, warnings, the hourly cron, manual and dry runs."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from support import WITHOUT_SCHEDULER, Api, FakeClock, holds_for, wait_for

from leadpush.assignment.models import Assignment
from leadpush.clock import SystemClock
from leadpush.transfer import engine
from leadpush.transfer.engine import RunReport, TransferBusy, _move_one, run_transfer
from leadpush.transfer.models import TransferRun
from leadpush.transfer.scheduler import MAX_SLEEP, TransferScheduler, cron_trigger, next_cron_after

SHANGHAI = ZoneInfo("Asia/Shanghai")


def run_now(api: Api, who) -> dict:
    """A manual run, as a person would start it: tried again while the scheduler's own run holds the lease."""

    def answered():
        r = api.client(who).post("/api/auto-transfer/run", json={})
        return None if r.status_code == 409 and r.json()["code"] == "transfer_running" else r

    r = wait_for(answered)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def runs(api: Api, who) -> list[dict]:
    return api.client(who).get("/api/auto-transfer/runs").json()["data"]["items"]


def rule(api: Api, who, **body) -> dict:
    payload = {
        "name": "24小时未跟进退回公海",
        "condition": "no_follow_up_after_assign",
        "thresholdHours": 24,
        "action": "public_pool",
        **body,
    }
    if "thresholdDays" in body:
        payload.pop("thresholdHours")
    r = api.client(who).post("/api/auto-transfer/rules", json=payload)
    assert r.status_code == 201, r.text
    return r.json()["data"]


def assigned_lead(api: Api, team, to, name: str = "张三") -> dict:
    lead = api.lead(team.manager, name=name)
    r = api.client(team.manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": to.id})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def get_lead(api: Api, who, lead_id: int) -> dict:
    return api.client(who).get(f"/api/customers/{lead_id}").json()["data"]


def kinds(api: Api, who) -> list[str]:
    return [n["type"] for n in api.client(who).get("/api/notifications").json()["data"]["items"]]


def test_rules_are_managed_by_admins_and_team_managers_only(api, team):
    rule(api, team.admin)
    team_rule = rule(api, team.manager, team="A", name="A组48小时", thresholdDays=2)
    assert team_rule["thresholdHours"] == 48 and team_rule["exemptStatuses"] == ["won"]
    assert (
        api.client(team.manager)
        .post(
            "/api/auto-transfer/rules",
            json={"name": "x", "condition": "not_won_within", "thresholdDays": 7, "action": "public_pool", "team": "B"},
        )
        .status_code
        == 403
    )
    assert (
        api.client(team.manager)
        .post(
            "/api/auto-transfer/rules",
            json={"name": "x", "condition": "not_won_within", "thresholdDays": 7, "action": "public_pool"},
        )
        .status_code
        == 403
    )
    assert api.client(team.alice).get("/api/auto-transfer/rules").status_code == 403
    assert api.client(team.alice).post("/api/auto-transfer/run").status_code == 403
    bad = [
        {"name": "x", "condition": "never", "thresholdHours": 1, "action": "public_pool"},
        {"name": "x", "condition": "not_won_within", "thresholdHours": 1, "action": "user"},
        {
            "name": "x",
            "condition": "not_won_within",
            "thresholdHours": 1,
            "action": "public_pool",
            "warnBeforeHours": 2,
        },
        {"name": "x", "condition": "not_won_within", "thresholdHours": -1, "action": "public_pool"},
        {"name": "x", "condition": "not_won_within", "action": "public_pool"},
        {
            "name": "x",
            "condition": "not_won_within",
            "thresholdHours": 1,
            "action": "public_pool",
            "exemptStatuses": ["sleeping"],
        },
    ]
    for body in bad:
        r = api.client(team.admin).post("/api/auto-transfer/rules", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["success"] is False and r.json()["code"] in ("validation_error", "invalid_rule")
    # Managers see global rules and their own team's; they edit only their team's.
    listed = api.client(team.manager_b).get("/api/auto-transfer/rules").json()["data"]
    assert [r["team"] for r in listed] == [None]
    assert (
        api.client(team.manager_b)
        .patch(f"/api/auto-transfer/rules/{team_rule['id']}", json={"enabled": False})
        .status_code
        == 404
    )
    r = api.client(team.manager).patch(f"/api/auto-transfer/rules/{team_rule['id']}", json={"enabled": False})
    assert r.status_code == 200 and r.json()["data"]["enabled"] is False
    assert api.client(team.manager).delete(f"/api/auto-transfer/rules/{team_rule['id']}").status_code == 200


def test_deadline_is_set_on_assignment_and_reset_by_follow_up(api, team):
    rule(api, team.admin, condition="no_follow_up_since_last", thresholdHours=48)
    lead = assigned_lead(api, team, team.alice)
    assigned = datetime.fromisoformat(lead["assignedAt"])
    assert datetime.fromisoformat(lead["transferDueAt"]) == assigned + timedelta(hours=48)
    api.nudge(hours=10)
    r = api.client(team.alice).post(f"/api/customers/{lead['id']}/follow-ups", json={"content": "电话沟通，有意向"})
    assert r.status_code == 201
    after = get_lead(api, team.alice, lead["id"])
    assert datetime.fromisoformat(after["transferDueAt"]) == assigned + timedelta(hours=58)
    # A won lead is exempt: no deadline at all.
    api.client(team.alice).post(f"/api/customers/{lead['id']}/follow-ups", json={"content": "签约", "status": "won"})
    assert get_lead(api, team.alice, lead["id"])["transferDueAt"] is None


def test_a_lead_moves_within_seconds_of_its_deadline_and_both_owners_hear(api, team):
    # From :10 to :40 no hour strikes, so the deadline run (not the hourly cron) is the one that moves the lead.
    # The clock goes back a day to get there: going back never sets off a catch-up cron run.
    api.ctx.clock.set((api.ctx.clock.now() - timedelta(days=1)).replace(minute=10, second=0, microsecond=0))
    rule(api, team.admin, thresholdHours=0.5, action="user", targetUserId=team.bob.id, name="30分钟未跟进转赵强")
    lead = assigned_lead(api, team, team.alice)
    api.nudge(minutes=29)
    time.sleep(0.3)  # a check that nothing happens (yet): the scheduler's look after a wake-up takes 0.25 s
    assert get_lead(api, team.admin, lead["id"])["ownerId"] == team.alice.id
    api.nudge(minutes=1, seconds=1)
    moved = wait_for(lambda: (c := get_lead(api, team.admin, lead["id"]))["ownerId"] == team.bob.id and c, 5)
    assert moved["ownerId"] == team.bob.id
    history = api.client(team.admin).get(f"/api/customers/{lead['id']}/assignments").json()["data"]
    assert history[0]["via"] == "auto_transfer" and history[0]["actorId"] is None
    assert "30分钟未跟进转赵强" in history[0]["reason"]
    bob_items = api.client(team.bob).get("/api/notifications").json()["data"]["items"]
    assert [(n["type"], n["data"]["via"]) for n in bob_items] == [("customer_assigned", "auto_transfer")]
    alice_items = api.client(team.alice).get("/api/notifications").json()["data"]["items"]
    assert [n["type"] for n in alice_items] == ["customer_assigned", "customer_recycled"]
    assert "超时未跟进" in alice_items[-1]["data"]["reason"]
    # The run's count was committed with the move: no waiting for the run to finish.
    assert any(r["trigger"] == "deadline" and r["moved"] == 1 for r in runs(api, team.admin))


@WITHOUT_SCHEDULER
def test_a_runs_counts_are_committed_with_each_move_while_it_is_still_going(api, team, monkeypatch):
    rule(api, team.admin, thresholdHours=1, action="user", targetUserId=team.bob.id)
    first, second = (assigned_lead(api, team, team.alice, name=name) for name in ("客户1", "客户2"))
    api.ctx.clock.advance(hours=2)
    paused, resume = threading.Event(), threading.Event()

    def pause_after_first_move(*args, **kwargs) -> None:
        # The run tells people once, when it ends; each move commits on its own: after the first one's
        # transaction, the run stands still between its two moves.
        _move_one(*args, **kwargs)
        if not paused.is_set():
            paused.set()
            resume.wait(30)

    monkeypatch.setattr(engine, "_move_one", pause_after_first_move)
    runner = threading.Thread(target=run_transfer, args=(api.ctx, "manual"), name="transfer-run", daemon=True)
    try:
        runner.start()
        assert paused.wait(30)
        assert get_lead(api, team.admin, first["id"])["ownerId"] == team.bob.id
        assert get_lead(api, team.admin, second["id"])["ownerId"] == team.alice.id
        [running] = runs(api, team.admin)
        assert running["finishedAt"] is None
        assert (running["examined"], running["moved"], running["failed"]) == (2, 1, 0)
    finally:
        resume.set()
        runner.join(30)
    [done] = runs(api, team.admin)
    assert done["finishedAt"] is not None and (done["examined"], done["moved"], done["failed"]) == (2, 2, 0)


@pytest.mark.slow  # waits for the scheduler to warn
def test_the_owner_is_warned_once_before_the_deadline(api, team):
    rule(api, team.admin, thresholdHours=24, warnBeforeHours=2)
    lead = assigned_lead(api, team, team.alice)
    api.nudge(hours=21)
    time.sleep(0.3)
    assert kinds(api, team.alice) == ["customer_assigned"]
    api.nudge(hours=1, minutes=30)
    wait_for(lambda: kinds(api, team.alice) == ["customer_assigned", "transfer_warning"])
    warning = api.client(team.alice).get("/api/notifications").json()["data"]["items"][-1]
    assert warning["data"]["customerId"] == lead["id"] and "跟进" in warning["body"]
    for _ in range(3):  # more runs, no second warning for the same deadline
        run_now(api, team.admin)
    api.nudge(minutes=10)
    time.sleep(0.3)
    assert kinds(api, team.alice) == ["customer_assigned", "transfer_warning"]
    assert get_lead(api, team.alice, lead["id"])["ownerId"] == team.alice.id


def test_round_robin_skips_the_owner_inactive_users_and_anyone_full(api, team):
    dora = api.user("周丹", "sales", "A")
    erin = api.user("吴敏", "sales", "A", capacity=0)
    frank = api.user("郑飞", "sales", "A")
    api.client(team.admin).patch(f"/api/users/{frank.id}", json={"active": False})
    rule(api, team.admin, thresholdHours=1, action="round_robin", team="A")
    leads = [assigned_lead(api, team, team.alice, name=f"客户{i}") for i in range(4)]
    api.nudge(hours=2)
    r = api.client(team.admin).post("/api/auto-transfer/run", json={})
    assert r.status_code in (200, 409)
    owners = [
        wait_for(
            lambda lid=lead["id"]: (
                get_lead(api, team.admin, lid)["ownerId"] != team.alice.id and get_lead(api, team.admin, lid)["ownerId"]
            )
        )
        for lead in leads
    ]
    assert set(owners) == {team.bob.id, dora.id}, owners  # never alice (owner), erin (full), frank (inactive)
    assert owners.count(team.bob.id) == owners.count(dora.id) == 2  # taking turns
    assert erin.id not in owners and frank.id not in owners


@WITHOUT_SCHEDULER
def test_dry_run_lists_what_would_move_and_moves_nothing(api, team):
    rule(api, team.admin, thresholdHours=1)
    leads = [assigned_lead(api, team, team.alice, name=f"客户{i}") for i in range(3)]
    api.ctx.clock.advance(hours=2)
    r = api.client(team.admin).post("/api/auto-transfer/run", json={"dryRun": True})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["dryRun"] is True and data["moved"] == 3
    assert sorted(i["customerId"] for i in data["items"]) == sorted(lead["id"] for lead in leads)
    assert all(i["toUserId"] is None and i["fromUserId"] == team.alice.id for i in data["items"])
    assert all(get_lead(api, team.admin, lead["id"])["ownerId"] == team.alice.id for lead in leads)
    assert kinds(api, team.alice) == ["customer_assigned"] * 3
    with api.ctx.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Assignment).where(Assignment.via == "auto_transfer")) == 0


@pytest.mark.slow  # long concurrency
@WITHOUT_SCHEDULER
def test_two_runners_at_once_move_each_lead_once(api, team):
    rule(api, team.admin, thresholdHours=1)
    leads = [assigned_lead(api, team, team.alice, name=f"客户{i}") for i in range(20)]
    api.ctx.clock.advance(hours=2)
    results: list[object] = []

    def runner() -> None:
        try:
            results.append(run_transfer(api.ctx, "manual"))
        except TransferBusy as exc:
            results.append(exc)

    threads = [threading.Thread(target=runner) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Even without the lease, each lead's move is conditional on its version: race _move_one directly.
    lead_id = assigned_lead(api, team, team.bob, name="争抢")["id"]
    api.ctx.clock.advance(hours=2)
    reports = [RunReport(None, "manual", False, api.ctx.clock.now()) for _ in range(4)]
    racers = [threading.Thread(target=_move_one, args=(api.ctx, r, lead_id, api.ctx.clock.now())) for r in reports]
    for t in racers:
        t.start()
    for t in racers:
        t.join()
    assert sum(r.moved for r in reports) == 1
    with api.ctx.db.read() as s:
        moved = s.execute(
            select(Assignment.customer_id, func.count())
            .where(Assignment.via == "auto_transfer")
            .group_by(Assignment.customer_id)
        ).all()
    assert sorted(cid for cid, _ in moved) == sorted([lead["id"] for lead in leads] + [lead_id])
    assert all(count == 1 for _, count in moved)
    # The run that moved them told Alice once, of all twenty (a transfer run notifies each person once).
    items = api.client(team.alice).get("/api/notifications").json()["data"]["items"]
    recycled = [(n["type"], n["data"].get("count")) for n in items if n["type"].endswith("_recycled")]
    assert recycled == [("customers_recycled", 20)]


@WITHOUT_SCHEDULER
def test_manual_run_reports_and_history(api, team):
    rule(api, team.admin, thresholdHours=1)
    assigned_lead(api, team, team.alice)
    api.ctx.clock.advance(hours=2)
    r = api.client(team.manager).post("/api/auto-transfer/run")
    assert r.status_code == 200 and r.json()["data"]["moved"] == 1
    assert "已流转 1 条" in r.json()["message"]
    runs = api.client(team.manager).get("/api/auto-transfer/runs").json()["data"]
    manual = [run for run in runs["items"] if run["trigger"] == "manual"]
    assert manual[0]["moved"] == 1 and manual[0]["finishedAt"] is not None


@pytest.mark.slow  # waits for the scheduler to fire
def test_cron_fires_on_the_hour_in_shanghai(api, stack, team):
    trigger = cron_trigger(api.ctx)
    fire = next_cron_after(trigger, datetime(2026, 11, 24, 10, 59, 30, tzinfo=SHANGHAI))
    assert fire == datetime(2026, 11, 24, 11, 0, tzinfo=SHANGHAI)
    assert next_cron_after(trigger, datetime(2026, 11, 24, 23, 0, 1, tzinfo=SHANGHAI)).hour == 0

    scheduler: TransferScheduler = stack[1].server.config.app.state.runtime.scheduler
    tomorrow = datetime.now(SHANGHAI).date() + timedelta(days=1)
    eleven = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 11, 0, tzinfo=SHANGHAI)
    api.ctx.clock.set(eleven - timedelta(seconds=2))
    api.nudge()  # a catch-up run for the jump forward may happen (now or a little later); it is not on 11:00

    def cron_starts() -> list[str]:
        with api.ctx.db.read() as s:
            started = s.scalars(select(TransferRun.started_at).where(TransferRun.trigger == "cron")).all()
        return [t.astimezone(SHANGHAI).strftime("%H:%M:%S") for t in started]

    def state() -> str:
        task = next((t for t in stack[1].server.config.app.state.runtime._tasks if "scheduler" in t.get_name()), None)
        ended = task is not None and task.done()
        return (
            f"clock {api.ctx.clock.now().astimezone(SHANGHAI)}, planned {scheduler.planned}, runs {scheduler.runs}, "
            f"reads {scheduler.reads}, cron starts {cron_starts()}, task ended {ended}"
            + (f" ({task.exception()!r})" if ended and task is not None and not task.cancelled() else "")
        )

    # The scheduler has seen the new clock (and served the hour before it, if it was due): it waits for 11:00.
    wait_for(lambda: scheduler.planned == eleven, timeout=MAX_SLEEP * 2, explain=state)
    assert "11:00:00" not in cron_starts()
    api.nudge(seconds=2)
    wait_for(lambda: "11:00:00" in cron_starts(), timeout=MAX_SLEEP * 2, explain=state)
    # The hour is served once, not again at every look while the clock still reads 11:00:00.
    holds_for(lambda: cron_starts().count("11:00:00") == 1)


def test_pool_rules_refuse_with_a_reason(api, team, monkeypatch):
    monkeypatch.setattr(api.ctx.settings, "claim_daily_limit", 2)
    leads = [api.lead(team.manager, name=f"公海{i}") for i in range(3)]
    alice = api.client(team.alice)
    assert alice.post(f"/api/customers/{leads[0]['id']}/claim").status_code == 200
    assert alice.post(f"/api/customers/{leads[1]['id']}/claim").status_code == 200
    r = alice.post(f"/api/customers/{leads[2]['id']}/claim")
    assert r.status_code == 409 and r.json()["code"] == "claim_limit_reached" and "上限" in r.json()["message"]
    # Tomorrow (in Shanghai) the limit starts over.
    api.ctx.clock.advance(days=1)
    assert alice.post(f"/api/customers/{leads[2]['id']}/claim").status_code == 200
    # Released leads cannot be grabbed back at once by the same person.
    assert alice.post(f"/api/customers/{leads[0]['id']}/release", json={}).status_code == 200
    r = alice.post(f"/api/customers/{leads[0]['id']}/claim")
    assert r.status_code == 409 and r.json()["code"] == "reclaim_cooldown"
    assert api.client(team.bob).post(f"/api/customers/{leads[0]['id']}/claim").status_code == 200


@WITHOUT_SCHEDULER
def test_capacity_is_respected_by_assignment_claim_and_transfer(api, team):
    full = api.user("满员", "sales", "A", capacity=1)
    first = api.lead(team.manager, name="第一条")
    second = api.lead(team.manager, name="第二条")
    m = api.client(team.manager)
    assert m.patch(f"/api/customers/{first['id']}/assign", json={"assignedTo": full.id}).status_code == 200
    r = m.patch(f"/api/customers/{second['id']}/assign", json={"assignedTo": full.id})
    assert r.status_code == 409 and r.json()["code"] == "at_capacity"
    r = api.client(full).post(f"/api/customers/{second['id']}/claim")
    assert r.status_code == 409 and r.json()["code"] == "at_capacity"
    rule(api, team.admin, thresholdHours=1, action="user", targetUserId=full.id)
    lead = assigned_lead(api, team, team.alice, name="第三条")
    api.ctx.clock.advance(hours=2)
    report = api.client(team.admin).post("/api/auto-transfer/run").json()["data"]
    failure = next(f for f in report["failures"] if f["customerId"] == lead["id"])
    assert "上限" in failure["reason"]
    assert get_lead(api, team.admin, lead["id"])["ownerId"] == team.alice.id


@pytest.fixture
def realtime_api(stack):
    ctx, server = stack
    ctx.clock = SystemClock()
    from support import wipe

    wipe(ctx)
    a = Api(url=server.url, ctx=ctx)
    yield a
    a.close()
    ctx.clock = FakeClock()


@pytest.mark.slow  # waits for a real deadline
def test_real_clock_lead_moves_within_two_seconds_of_its_deadline(realtime_api):
    api = realtime_api
    admin = api.user("管理员", "admin", None)
    manager = api.user("王经理", "manager", "A")
    alice = api.user("李丽", "sales", "A")
    rule(api, admin, thresholdHours=3 / 3600)  # three seconds
    lead = api.lead(manager)
    r = api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": alice.id})
    due = datetime.fromisoformat(r.json()["data"]["transferDueAt"])
    wait_for(lambda: get_lead(api, admin, lead["id"])["inPool"], timeout=10, interval=0.02)
    lag = (datetime.now(due.tzinfo) - due).total_seconds()
    assert 0 <= lag < 2.0, lag


def test_a_new_rule_gives_existing_leads_their_deadlines(api, team):
    lead = assigned_lead(api, team, team.alice)
    assert lead["transferDueAt"] is None  # no rule yet
    rule(api, team.admin, thresholdHours=5)
    due = wait_for(lambda: get_lead(api, team.alice, lead["id"])["transferDueAt"])
    assert datetime.fromisoformat(due) == datetime.fromisoformat(lead["assignedAt"]) + timedelta(hours=5)


@WITHOUT_SCHEDULER
def test_rules_and_runs_name_people_and_rules_and_a_deleted_rule_is_marked(api, team):
    to_bob = rule(
        api, team.admin, name="一小时未跟进转给专人", thresholdHours=1, action="user", targetUserId=team.bob.id
    )
    assert to_bob["targetUserName"] == "赵强"
    lead = assigned_lead(api, team, team.alice, name="林峰")
    stuck = assigned_lead(api, team, team.bob, name="何静")
    # Bob just lost it: the rule may not hand it back to him within the reclaim cooldown.
    r = api.client(team.manager).patch(f"/api/customers/{stuck['id']}/assign", json={"assignedTo": team.alice.id})
    assert r.status_code == 200, r.text
    api.ctx.clock.advance(hours=2)
    run_now(api, team.admin)

    # The lead's former owner learns it was taken back, by which rule, and nothing of it now.
    r = api.client(team.alice).get(f"/api/customers/{lead['id']}")
    assert r.status_code == 404 and r.json()["code"] == "customer_recycled"
    gone = r.json()["data"]
    assert (gone["via"], gone["ruleName"], gone["actorName"], gone["toPool"]) == (
        "auto_transfer",
        "一小时未跟进转给专人",
        None,
        False,
    )

    [failure] = [f for run in runs(api, team.admin) for f in run["failures"]]
    assert failure["customerId"] == stuck["id"] and failure["ruleName"] == "一小时未跟进转给专人"
    assert failure["ruleDeleted"] is False
    assert api.client(team.admin).delete(f"/api/auto-transfer/rules/{to_bob['id']}").status_code == 200
    [failure] = [f for run in runs(api, team.admin) for f in run["failures"]]
    assert failure["ruleId"] == to_bob["id"] and failure["ruleName"] is None and failure["ruleDeleted"] is True


def test_a_rules_name_is_read_back_from_the_reason_it_wrote() -> None:
    from leadpush.transfer.messaging import rule_name_in, transfer_reason
    from leadpush.transfer.models import TransferRule

    for name in ("24小时未跟进退回公海", "A组：两天未跟进", "x"):
        for action in ("public_pool", "round_robin", "user"):
            assert rule_name_in(transfer_reason(TransferRule(name=name, action=action))) == name
    assert rule_name_in("客户无意向") is None and rule_name_in(None) is None
