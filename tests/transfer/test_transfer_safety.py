"""Transfer safety: a preview (and a grace period) before a rule moves leads at once, no lead handed back to
whom it was just taken from, the pool after N automatic moves, and failures that back off instead of
repeating every ten minutes."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from support import WITHOUT_SCHEDULER, Api, ok, refused, wait_for

RULE = {
    "name": "两小时未跟进退回公海",
    "condition": "no_follow_up_after_assign",
    "thresholdHours": 2,
    "action": "public_pool",
}


ADMIN: dict[str, object] = {}


@pytest.fixture
def team(team, api):  # noqa: F811 - the shared fixture, with its admin remembered for get_lead
    ADMIN[api.url] = team.admin
    return team


def make_rule(api: Api, who, **body) -> dict:
    return ok(api.client(who).post("/api/auto-transfer/rules", json={**RULE, **body}), 201)


def preview(api: Api, who, **body) -> dict:
    return ok(api.client(who).post("/api/auto-transfer/rules/preview", json=body))


def assigned_lead(api: Api, team, to, name: str = "张三") -> dict:
    lead = api.lead(team.manager, name=name)
    return ok(api.client(team.admin).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": to.id}))


def reassign(api: Api, team, lead_id: int, to) -> dict:
    return ok(api.client(team.admin).patch(f"/api/customers/{lead_id}/assign", json={"assignedTo": to.id}))


def get_lead(api: Api, lead_id: int) -> dict:
    """The lead as an admin sees it (the ctx's API tokens belong to the `team` fixture's admin)."""
    return ok(api.client(ADMIN[api.url]).get(f"/api/customers/{lead_id}"))


def owner_of(api: Api, lead_id: int) -> int | None:
    return get_lead(api, lead_id)["ownerId"]


def due_of(api: Api, lead_id: int) -> datetime | None:
    due = get_lead(api, lead_id)["transferDueAt"]
    return datetime.fromisoformat(due) if due else None


def run_now(api: Api, who, dry_run: bool = False) -> dict:
    return ok(api.client(who).post("/api/auto-transfer/run", json={"dryRun": dry_run}))


def runs(api: Api, who) -> list[dict]:
    return ok(api.client(who).get("/api/auto-transfer/runs", params={"pageSize": 200}))["items"]


def kinds(api: Api, who) -> list[str]:
    return [n["type"] for n in ok(api.client(who).get("/api/notifications"))["items"]]


def history(api: Api, who, lead_id: int) -> list[dict]:
    return ok(api.client(who).get(f"/api/customers/{lead_id}/assignments"))


def deadlines_settled(api: Api, lead_ids: list[int], expected) -> None:  # noqa: ANN001
    """Rules recompute deadlines after their answer (a background task): wait for the expected ones."""
    wait_for(lambda: all(due_of(api, lid) == expected(lid) for lid in lead_ids))


# --- Saving a rule that would move leads at once: a preview, and a grace period ---------------------------


@WITHOUT_SCHEDULER
def test_a_preview_counts_by_team_what_a_new_or_changed_rule_would_move_or_warn_at_once_and_writes_nothing(api, team):
    old = [assigned_lead(api, team, team.alice, name=f"老客户{i}") for i in range(3)]
    old.append(assigned_lead(api, team, team.carol, name="乙组老客户"))
    api.ctx.clock.advance(hours=4)
    fresh = assigned_lead(api, team, team.bob, name="新客户")  # due in one hour under a two-hour rule
    api.ctx.clock.advance(hours=1)

    seen = preview(api, team.admin, **RULE, warnBeforeHours=1.5)
    assert (seen["moved"], seen["warned"], seen["failed"]) == (4, 1, 0)
    assert seen["teams"] == {
        "A": {"moved": 3, "warned": 1, "failed": 0},
        "B": {"moved": 1, "warned": 0, "failed": 0},
    }
    sample = {i["customerName"]: i for i in seen["items"]}
    assert sample["老客户0"]["outcome"] == "move" and sample["老客户0"]["fromUserName"] == "李丽"
    assert sample["老客户0"]["toUserId"] is None and sample["新客户"]["outcome"] == "warn"
    # A preview moves, warns and records nothing.
    assert all(owner_of(api, lead["id"]) for lead in [*old, fresh])
    assert runs(api, team.admin) == []
    assert kinds(api, team.alice) == ["customer_assigned"] * 3 and kinds(api, team.bob) == ["customer_assigned"]

    # A manager previews only rules they could save, and sees their team's leads.
    assert preview(api, team.manager, **RULE, team="A")["moved"] == 3
    refused(
        api.client(team.manager_b).post("/api/auto-transfer/rules/preview", json={**RULE, "team": "A"}),
        403,
        "forbidden",
    )
    refused(api.client(team.manager).post("/api/auto-transfer/rules/preview", json=RULE), 403, "forbidden")
    refused(api.client(team.alice).post("/api/auto-transfer/rules/preview", json=RULE), 403, "forbidden")
    bad = api.client(team.admin).post("/api/auto-transfer/rules/preview", json={"name": "x", "action": "public_pool"})
    assert bad.status_code == 422 and bad.json()["success"] is False

    # A change to a saved rule (its id and the fields that change).
    slow = make_rule(api, team.admin, name="三天未跟进", thresholdHours=72)
    assert preview(api, team.admin, id=slow["id"], enabled=False)["moved"] == 0
    tightened = preview(api, team.admin, id=slow["id"], thresholdHours=2)
    assert (tightened["moved"], tightened["warned"]) == (4, 0)
    refused(api.client(team.admin).post("/api/auto-transfer/rules/preview", json={"id": 999999}), 404, "rule_not_found")
    # With a grace period nothing moves at once: every such lead is warned instead.
    graced = preview(api, team.admin, id=slow["id"], thresholdHours=2, graceHours=3)
    assert (graced["moved"], graced["warned"], graced["graced"]) == (0, 5, 5)
    assert ok(api.client(team.admin).get("/api/auto-transfer/rules"))[0]["thresholdHours"] == 72


def test_a_grace_period_gives_the_leads_a_rule_would_take_at_once_until_its_end_and_warns_their_owners(api, team):
    old = [assigned_lead(api, team, team.alice, name=f"老客户{i}") for i in range(2)]
    api.nudge(hours=5)
    saved_at = api.ctx.clock.now()
    rule = make_rule(api, team.admin, graceHours=3)
    grace_end = saved_at + timedelta(hours=3)
    assert datetime.fromisoformat(rule["graceUntil"]) == grace_end
    deadlines_settled(api, [lead["id"] for lead in old], lambda _lid: grace_end)
    # Their owner hears at once that they go at the end of the grace period (the rule has no warning time).
    wait_for(lambda: kinds(api, team.alice) == ["customer_assigned"] * 2 + ["transfer_warning"] * 2)
    assert all(owner_of(api, lead["id"]) == team.alice.id for lead in old)
    # A lead assigned after the rule was saved keeps the rule's own deadline.
    new = assigned_lead(api, team, team.bob, name="新客户")
    assert datetime.fromisoformat(new["transferDueAt"]) == saved_at + timedelta(hours=2)

    api.nudge(hours=2, seconds=1)
    wait_for(lambda: owner_of(api, new["id"]) is None)
    assert all(owner_of(api, lead["id"]) == team.alice.id for lead in old)
    api.nudge(hours=1)
    wait_for(lambda: all(owner_of(api, lead["id"]) is None for lead in old))

    # A grace period is hours, up to 30 days; a PATCH may give one (0 takes it away).
    for hours in (-1, 721, "soon"):
        r = api.client(team.admin).post("/api/auto-transfer/rules", json={**RULE, "graceHours": hours})
        assert r.status_code == 422 and r.json()["success"] is False
    patched = ok(api.client(team.admin).patch(f"/api/auto-transfer/rules/{rule['id']}", json={"graceHours": 0}))
    assert patched["graceUntil"] is None


# --- Round robin never hands a lead back ---------------------------------------------------------------------


@WITHOUT_SCHEDULER
def test_round_robin_never_hands_a_lead_back_to_whom_it_was_just_taken_from(api, team, monkeypatch):
    dora = api.user("周丹", "sales", "A")
    make_rule(api, team.admin, name="一小时未跟进轮流分配", thresholdHours=1, action="round_robin", team="A")
    lead = assigned_lead(api, team, team.alice)
    api.ctx.clock.advance(hours=2)
    run_now(api, team.admin)
    assert owner_of(api, lead["id"]) == team.bob.id
    api.ctx.clock.advance(hours=2)
    run_now(api, team.admin)
    assert owner_of(api, lead["id"]) == dora.id  # not alice, who lost it an hour ago

    # Bob lost it just now, alice within the cooldown: nobody may take it from dora.
    api.ctx.clock.advance(hours=2)
    report = run_now(api, team.admin)
    [failure] = report["failures"]
    assert failure["customerId"] == lead["id"] and "冷却" in failure["reason"], failure
    assert owner_of(api, lead["id"]) == dora.id

    # Without a cooldown alice may have it again; bob, the owner it was last taken from, still may not.
    monkeypatch.setattr(api.ctx.settings, "reclaim_cooldown_hours", 0)
    api.ctx.clock.advance(minutes=11)  # past the first retry
    run_now(api, team.admin)
    assert owner_of(api, lead["id"]) == team.alice.id


@WITHOUT_SCHEDULER
def test_a_user_rule_does_not_hand_a_lead_back_to_its_target_within_the_cooldown(api, team):
    make_rule(api, team.admin, name="一小时未跟进转赵强", thresholdHours=1, action="user", targetUserId=team.bob.id)
    lead = assigned_lead(api, team, team.bob)
    lost_at = api.ctx.clock.now()
    reassign(api, team, lead["id"], team.alice)  # bob just lost it
    api.ctx.clock.advance(hours=2)
    report = run_now(api, team.admin)
    [failure] = report["failures"]
    assert "冷却" in failure["reason"] and "赵强" in failure["reason"], failure
    # Tried again when the cooldown (24 hours) ends, not every ten minutes meanwhile.
    free_at = lost_at + timedelta(hours=24)
    assert due_of(api, lead["id"]) == free_at
    assert datetime.fromisoformat(failure["retryAt"]) == free_at
    api.ctx.clock.set(free_at + timedelta(seconds=1))
    assert run_now(api, team.admin)["moved"] == 1
    assert owner_of(api, lead["id"]) == team.bob.id


# --- After N automatic moves, the pool ------------------------------------------------------------------------


@WITHOUT_SCHEDULER
def test_after_n_automatic_moves_a_lead_goes_to_the_pool_and_says_why(api, team, monkeypatch):
    monkeypatch.setattr(api.ctx.settings, "transfer_max_moves", 2)
    monkeypatch.setattr(api.ctx.settings, "reclaim_cooldown_hours", 0)
    dora = api.user("周丹", "sales", "A")
    make_rule(api, team.admin, name="一小时未跟进轮流分配", thresholdHours=1, action="round_robin", team="A")
    lead = assigned_lead(api, team, team.alice)
    owners = []
    for _ in range(2):
        api.ctx.clock.advance(hours=2)
        run_now(api, team.admin)
        owners.append(owner_of(api, lead["id"]))
    assert owners == [team.bob.id, dora.id]

    api.ctx.clock.advance(hours=2)
    [planned] = run_now(api, team.admin, dry_run=True)["items"]
    assert planned["toUserId"] is None and "已自动流转 2 次" in planned["reason"]
    run_now(api, team.admin)
    assert get_lead(api, lead["id"])["inPool"] is True
    last = history(api, team.admin, lead["id"])[0]
    assert last["via"] == "auto_transfer" and last["toUserId"] is None
    assert "已自动流转 2 次，退回公海" in last["reason"] and "一小时未跟进轮流分配" in last["reason"]
    recycled = [n for n in ok(api.client(dora).get("/api/notifications"))["items"] if n["type"] == "customer_recycled"]
    assert "已自动流转 2 次，退回公海" in recycled[-1]["data"]["reason"]

    # Claimed from the pool, it starts counting again.
    ok(api.client(team.bob).post(f"/api/customers/{lead['id']}/claim"))
    api.ctx.clock.advance(hours=2)
    run_now(api, team.admin)
    assert owner_of(api, lead["id"]) not in (None, team.bob.id)

    # 0 turns the limit off.
    monkeypatch.setattr(api.ctx.settings, "transfer_max_moves", 0)
    for _ in range(3):
        api.ctx.clock.advance(hours=2)
        run_now(api, team.admin)
        assert owner_of(api, lead["id"]) is not None


# --- A rule whose target owns the lead; failures that repeat ------------------------------------------------


@WITHOUT_SCHEDULER
def test_a_user_rule_does_not_apply_to_a_lead_its_target_already_owns(api, team):
    make_rule(api, team.admin, name="一小时未跟进转赵强", thresholdHours=1, action="user", targetUserId=team.bob.id)
    bobs = assigned_lead(api, team, team.bob, name="赵强的客户")
    alices = assigned_lead(api, team, team.alice, name="李丽的客户")
    assert bobs["transferDueAt"] is None
    assert datetime.fromisoformat(alices["transferDueAt"]) == datetime.fromisoformat(alices["assignedAt"]) + timedelta(
        hours=1
    )
    # Another rule's deadline applies to it instead.
    make_rule(api, team.admin, name="五小时未跟进退回公海", thresholdHours=5)
    deadlines_settled(api, [bobs["id"]], lambda _lid: datetime.fromisoformat(bobs["assignedAt"]) + timedelta(hours=5))
    api.ctx.clock.advance(hours=2)
    report = run_now(api, team.admin)
    assert (report["moved"], report["failed"], report["failures"]) == (1, 0, [])
    assert owner_of(api, alices["id"]) == team.bob.id and owner_of(api, bobs["id"]) == team.bob.id


def test_a_rule_that_cannot_move_a_lead_backs_off_and_the_history_shows_it_once(api, team):
    # Team B's only salesperson owns the lead: round robin has nobody to give it to.
    make_rule(
        api,
        team.admin,
        name="乙组一小时未跟进轮流",
        thresholdHours=1,
        warnBeforeHours=0.5,
        action="round_robin",
        team="B",
    )
    lead = assigned_lead(api, team, team.carol)
    api.nudge(minutes=40)
    wait_for(lambda: kinds(api, team.carol) == ["customer_assigned", "transfer_warning"])
    api.nudge(minutes=80)

    def failures() -> list[dict]:
        return [f for run in runs(api, team.admin) for f in run["failures"]]

    [failure] = wait_for(failures)
    assert failure["customerId"] == lead["id"] and "没有可接收" in failure["reason"]
    first_retry = datetime.fromisoformat(failure["retryAt"])
    wait_for(lambda: due_of(api, lead["id"]) == first_retry)
    # Each failed retry waits twice as long as the one before (up to a day), and adds nothing to the history.
    gaps = []
    for _ in range(3):
        before = due_of(api, lead["id"])
        assert before is not None
        api.nudge(seconds=(before - api.ctx.clock.now()).total_seconds() + 1)
        wait_for(lambda before=before: (due_of(api, lead["id"]) or before) > before)
        after = due_of(api, lead["id"])
        assert after is not None
        gaps.append(round((after - before).total_seconds() / 60))
    assert gaps == [20, 40, 80], gaps
    assert len(failures()) == 1
    assert kinds(api, team.carol).count("transfer_warning") == 1  # warned once, not before every retry

    # Someone to give it to: the next retry moves it.
    erin = api.user("吴敏", "sales", "B")
    due = due_of(api, lead["id"])
    assert due is not None
    api.nudge(seconds=(due - api.ctx.clock.now()).total_seconds() + 1)
    wait_for(lambda: owner_of(api, lead["id"]) == erin.id)
    assert len(failures()) == 1


@WITHOUT_SCHEDULER
def test_changing_a_rule_retries_its_backed_off_leads_at_once(api, team):
    rule = make_rule(api, team.admin, name="乙组轮流", thresholdHours=0.5, action="round_robin", team="B")
    lead = assigned_lead(api, team, team.carol)
    api.ctx.clock.advance(hours=1)
    assert run_now(api, team.admin)["failed"] == 1
    assert due_of(api, lead["id"]) > api.ctx.clock.now()
    ok(api.client(team.admin).patch(f"/api/auto-transfer/rules/{rule['id']}", json={"name": "乙组半小时轮流"}))
    wait_for(lambda: (due_of(api, lead["id"]) or api.ctx.clock.now()) <= api.ctx.clock.now())
