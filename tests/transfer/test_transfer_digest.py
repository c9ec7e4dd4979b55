"""A burst of ownership changes tells each person once: an automatic transfer run (one notice for the leads a
person gained, one for those they lost), and routing of one intake request."""

from __future__ import annotations

from sqlalchemy import func, select
from support import WITHOUT_SCHEDULER, Api, ok
from support.waiting import wait_for

from leadpush.assignment.service import Move, change_owner
from leadpush.leads.models import Customer
from leadpush.notify.models import Delivery, Notification
from leadpush.transfer.engine import run_batch_id, run_transfer
from leadpush.transfer.models import TransferRun
from leadpush.users.models import User


def rule(api: Api, who, **body) -> dict:
    payload = {"name": "1小时未跟进转赵强", "condition": "no_follow_up_after_assign", "thresholdHours": 1, **body}
    return ok(api.client(who).post("/api/auto-transfer/rules", json=payload), 201)


def assigned_leads(api: Api, team, to, n: int) -> list[int]:
    ids = []
    for i in range(n):
        lead = api.lead(team.manager, name=f"客户{i}", phone=f"1380000{i:04d}")
        ok(api.client(team.manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": to.id}))
        ids.append(lead["id"])
    return ids


def notes(api: Api, who) -> list[dict]:
    return ok(api.client(who).get("/api/notifications"))["items"]


def deliveries_of(api: Api, notification_id: int) -> int:
    with api.ctx.db.read() as session:
        return session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.notification_id == notification_id)
        )


@WITHOUT_SCHEDULER
def test_a_transfer_run_of_seven_leads_to_one_person_tells_them_once(api, team):
    rule(api, team.admin, action="user", targetUserId=team.bob.id)
    ids = assigned_leads(api, team, team.alice, 7)
    api.ctx.clock.advance(hours=2)

    report = ok(api.client(team.admin).post("/api/auto-transfer/run", json={}))

    assert report["moved"] == 7
    [gained] = notes(api, team.bob)
    assert gained["type"] == "customers_assigned" and gained["title"] == "您有 7 条新线索"
    assert gained["body"] == "7 条线索超时未跟进，已自动流转给您"
    assert gained["data"]["count"] == 7 and sorted(gained["data"]["customerIds"]) == sorted(ids)
    assert gained["data"]["via"] == "auto_transfer"
    alice = notes(api, team.alice)
    assert [n["type"] for n in alice] == ["customer_assigned"] * 7 + ["customers_recycled"]
    lost = alice[-1]
    assert lost["title"] == "您有 7 条线索已被收回" and "超时未跟进" in lost["body"]
    assert sorted(lost["data"]["customerIds"]) == sorted(ids)
    assert deliveries_of(api, gained["id"]) >= 1  # its deliveries, once: one notice, one row per channel
    # A second run has nothing to move and tells nobody anything more.
    ok(api.client(team.admin).post("/api/auto-transfer/run", json={}))
    assert len(notes(api, team.bob)) == 1 and len(notes(api, team.alice)) == 8


@WITHOUT_SCHEDULER
def test_a_run_moving_one_lead_to_a_person_tells_them_of_that_lead(api, team):
    rule(api, team.admin, action="user", targetUserId=team.bob.id)
    [lead_id] = assigned_leads(api, team, team.alice, 1)
    api.ctx.clock.advance(hours=2)
    ok(api.client(team.admin).post("/api/auto-transfer/run", json={}))
    [gained] = notes(api, team.bob)
    assert gained["type"] == "customer_assigned" and gained["data"]["customerId"] == lead_id
    assert gained["data"]["via"] == "auto_transfer" and gained["data"]["fromUserId"] == team.alice.id
    assert notes(api, team.alice)[-1]["type"] == "customer_recycled"


@WITHOUT_SCHEDULER
def test_round_robin_run_tells_each_new_owner_once_and_each_loser_once(api, team):
    carol2 = api.user("钱多", "sales", "A")
    rule(api, team.admin, action="round_robin", team="A")
    assigned_leads(api, team, team.alice, 6)
    api.ctx.clock.advance(hours=2)
    ok(api.client(team.admin).post("/api/auto-transfer/run", json={}))
    for who in (team.bob, carol2):
        [gained] = notes(api, who)
        assert gained["type"] == "customers_assigned" and gained["data"]["count"] == 3
    assert [n["type"] for n in notes(api, team.alice)][-1] == "customers_recycled"
    assert notes(api, team.alice)[-1]["data"]["count"] == 6


@WITHOUT_SCHEDULER
def test_a_run_that_died_before_telling_anyone_is_told_by_the_next_run(api, team):
    ids = assigned_leads(api, team, team.alice, 3)
    now = api.ctx.clock.now()
    # A run that moved three leads and was killed before it closed (no finished_at, no notices).
    with api.ctx.db.write() as session:
        run = TransferRun(trigger="cron", started_at=now, details={})
        session.add(run)
        session.flush()
        bob = session.get_one(User, team.bob.id)
        moves = [Move(session.get_one(Customer, i), bob) for i in ids]
        change_owner(
            api.ctx, session, actor=None, moves=moves, via="auto_transfer", batch_id=run_batch_id(run.id), notify=False
        )
    assert notes(api, team.bob) == []
    run_transfer(api.ctx, "manual")
    [gained] = notes(api, team.bob)
    assert gained["type"] == "customers_assigned" and gained["data"]["count"] == 3
    assert notes(api, team.alice)[-1]["type"] == "customers_recycled"
    run_transfer(api.ctx, "manual")  # told once
    assert len(notes(api, team.bob)) == 1
    with api.ctx.db.read() as session:
        assert (
            session.scalar(
                select(func.count()).select_from(Notification).where(Notification.recipient_id == team.bob.id)
            )
            == 1
        )


def test_an_intake_burst_routed_to_one_person_tells_them_once(api, team):
    ok(
        api.client(team.admin).post(
            "/api/distribution-rules", json={"name": "全给李丽", "action": "user", "targetUserId": team.alice.id}
        ),
        201,
    )
    source = ok(api.client(team.admin).post("/api/lead-sources", json={"key": "form", "name": "表单"}), 201)
    leads = [{"name": f"客户{i}", "phone": f"1390000{i:04d}"} for i in range(4)]
    answer = ok(api.client(source["token"]).post("/api/leads/inbound", json={"leads": leads}))
    assert answer["created"] == 4 and all(i["ownerId"] == team.alice.id for i in answer["items"])
    [note] = notes(api, team.alice)
    assert note["type"] == "customers_assigned" and note["data"]["count"] == 4


@WITHOUT_SCHEDULER
def test_leads_a_run_returns_to_the_pool_and_routing_hands_on_count_in_the_same_notices(api, team):
    admin = api.client(team.admin)
    transfer = {"name": "24小时未跟进", "team": "A", "condition": "no_follow_up_after_assign", "thresholdHours": 24}
    ok(admin.post("/api/auto-transfer/rules", json={**transfer, "action": "public_pool"}), 201)
    routing = {"name": "收回后给赵强", "team": "A", "action": "user", "targetUserId": team.bob.id}
    ok(admin.post("/api/distribution-rules", json={**routing, "appliesOn": ["recycled"]}), 201)
    ids = assigned_leads(api, team, team.alice, 3)
    api.ctx.clock.advance(hours=25)

    ok(admin.post("/api/auto-transfer/run", json={}))

    assert {ok(admin.get(f"/api/customers/{i}"))["ownerId"] for i in ids} == {team.bob.id}
    [gained] = notes(api, team.bob)
    assert gained["type"] == "customers_assigned" and gained["data"]["count"] == 3
    lost = notes(api, team.alice)[-1]
    assert lost["type"] == "customers_recycled" and lost["data"]["count"] == 3
    assert lost["body"] == "24小时未跟进：超时未跟进，退回公海"
    history = ok(admin.get(f"/api/customers/{ids[0]}/assignments"))
    assert [h["via"] for h in history] == ["route", "auto_transfer", "web"]
    assert history[0]["batchId"] == history[1]["batchId"] and history[0]["batchId"].startswith("transfer-run-")


def test_a_run_that_died_is_told_by_the_scheduler_without_waiting_for_another_run(api, team):
    """The scheduler looks for runs that died before telling anyone (every few seconds), so their people
    hear within seconds of the dead run's lease running out, not at the next hourly run."""
    ids = assigned_leads(api, team, team.alice, 2)
    with api.ctx.db.write() as session:
        run = TransferRun(trigger="cron", started_at=api.ctx.clock.now(), details={})
        session.add(run)
        session.flush()
        bob = session.get_one(User, team.bob.id)
        moves = [Move(session.get_one(Customer, i), bob) for i in ids]
        change_owner(
            api.ctx, session, actor=None, moves=moves, via="auto_transfer", batch_id=run_batch_id(run.id), notify=False
        )
    assert notes(api, team.bob) == []
    api.ctx.clock.advance(minutes=3)  # the dead run's lease (two minutes) has run out
    [gained] = wait_for(lambda: notes(api, team.bob), 45)
    assert gained["type"] == "customers_assigned" and gained["data"]["count"] == 2
    with api.ctx.db.read() as session:
        assert (session.get_one(TransferRun, run.id).details or {}).get("told") is True
