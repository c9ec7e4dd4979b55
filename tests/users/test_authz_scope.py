"""Team scope of automatic transfer: rules, their targets and the run history.

"No team" means "no rights": a manager without a team manages no team's rules, and company-wide rules
(team null) are an admin's alone. A manager's rule may hand leads only to whom a manager may assign a
lead by hand. The run history shows a manager only their team's runs, counts and leads.
"""

from __future__ import annotations

from support import Api, wait_for

from leadpush.transfer.models import TransferRule


def create_rule(api: Api, who, **body):
    payload = {"name": "规则", "condition": "not_won_within", "action": "public_pool", **body}
    if "thresholdHours" not in body:
        payload["thresholdDays"] = 30
    return api.client(who).post("/api/auto-transfer/rules", json=payload)


def stored_rule(api: Api, rule_id: int) -> TransferRule | None:
    with api.ctx.db.read() as s:
        rule = s.get(TransferRule, rule_id)
        if rule is not None:
            s.expunge(rule)
        return rule


def test_a_manager_without_a_team_cannot_change_company_wide_rules(api, team):
    loner = api.user("无团队经理", "manager", None)
    company = create_rule(api, team.admin, name="全公司规则").json()["data"]
    # They may see it (it applies to leads they own), but not change or delete it.
    listed = api.client(loner).get("/api/auto-transfer/rules").json()["data"]
    assert [r["id"] for r in listed] == [company["id"]]
    r = api.client(loner).patch(
        f"/api/auto-transfer/rules/{company['id']}", json={"action": "user", "targetUserId": loner.id}
    )
    assert r.status_code == 403 and r.json()["code"] == "forbidden", r.text
    r = api.client(loner).delete(f"/api/auto-transfer/rules/{company['id']}")
    assert r.status_code == 403 and r.json()["code"] == "forbidden", r.text
    kept = stored_rule(api, company["id"])
    assert kept is not None and kept.action == "public_pool" and kept.target_user_id is None
    # Nor create one (company-wide or for any team), nor run the transfer.
    assert create_rule(api, loner).status_code == 403
    assert create_rule(api, loner, team="A").status_code == 403
    assert api.client(loner).post("/api/auto-transfer/run", json={"dryRun": True}).status_code == 403


def test_a_manager_without_a_team_manages_nobody_else(api, team):
    """Guards the other team comparisons: leads, users, deliveries and assignment, for a teamless manager."""
    loner = api.user("无团队经理", "manager", None)
    drifter = api.user("无团队销售", "sales", None)
    lead = api.lead(team.admin, name="散客", assignedTo=drifter.id)
    pool = api.lead(team.admin, name="公海客户")
    client = api.client(loner)
    assert [u["id"] for u in client.get("/api/users").json()["data"]] == [loner.id]
    assert client.get(f"/api/customers/{lead['id']}").status_code == 404
    assert client.post(f"/api/customers/{lead['id']}/follow-ups", json={"content": "x"}).status_code == 404
    assert client.post(f"/api/customers/{lead['id']}/release").status_code == 404
    r = client.patch(f"/api/customers/{pool['id']}/assign", json={"assignedTo": drifter.id})
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    deliveries = client.get("/api/deliveries").json()["data"]["items"]
    assert all(d["recipientId"] == loner.id for d in deliveries), deliveries
    # Themselves they still manage: a pool lead may go to them.
    assert client.patch(f"/api/customers/{pool['id']}/assign", json={"assignedTo": loner.id}).status_code == 200


def test_a_team_manager_cannot_change_company_wide_rules_but_an_admin_can(api, team):
    company = create_rule(api, team.admin, name="全公司规则").json()["data"]
    for verb, kwargs in (("PATCH", {"json": {"enabled": False}}), ("DELETE", {})):
        r = api.client(team.manager).request(verb, f"/api/auto-transfer/rules/{company['id']}", **kwargs)
        assert r.status_code == 403 and r.json()["code"] == "forbidden", (verb, r.text)
    # A manager cannot turn their team's rule into a company-wide one either.
    own = create_rule(api, team.manager, team="A").json()["data"]
    r = api.client(team.manager).patch(f"/api/auto-transfer/rules/{own['id']}", json={"team": None})
    assert r.status_code == 403
    assert stored_rule(api, own["id"]).team == "A"
    r = api.client(team.admin).patch(f"/api/auto-transfer/rules/{company['id']}", json={"enabled": False})
    assert r.status_code == 200 and r.json()["data"]["enabled"] is False
    assert api.client(team.admin).delete(f"/api/auto-transfer/rules/{company['id']}").status_code == 200


def test_a_managers_rule_hands_leads_only_to_their_team(api, team):
    for target in (team.carol, team.admin, team.manager_b):
        r = create_rule(api, team.manager, team="A", action="user", targetUserId=target.id)
        assert r.status_code == 403 and r.json()["code"] == "forbidden", (target.name, r.text)
    ok = create_rule(api, team.manager, team="A", action="user", targetUserId=team.bob.id)
    assert ok.status_code == 201, ok.text
    rule_id = ok.json()["data"]["id"]
    # Retargeting on update is checked the same way, alone or together with the action.
    r = api.client(team.manager).patch(f"/api/auto-transfer/rules/{rule_id}", json={"targetUserId": team.carol.id})
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    own = create_rule(api, team.manager, team="A").json()["data"]
    r = api.client(team.manager).patch(
        f"/api/auto-transfer/rules/{own['id']}", json={"action": "user", "targetUserId": team.admin.id}
    )
    assert r.status_code == 403
    assert stored_rule(api, rule_id).target_user_id == team.bob.id
    assert stored_rule(api, own["id"]).action == "public_pool"
    # An admin may send a team's leads anywhere; the team's manager may still switch that rule off.
    cross = create_rule(api, team.admin, team="A", action="user", targetUserId=team.carol.id)
    assert cross.status_code == 201, cross.text
    r = api.client(team.manager).patch(
        f"/api/auto-transfer/rules/{cross.json()['data']['id']}", json={"enabled": False}
    )
    assert r.status_code == 200, r.text


def _runs(api: Api, who) -> list[dict]:
    r = api.client(who).get("/api/auto-transfer/runs", params={"pageSize": 200})
    assert r.status_code == 200, r.text
    return r.json()["data"]["items"]


def _run_now(api: Api, who) -> dict:
    def attempt():
        r = api.client(who).post("/api/auto-transfer/run", json={})
        return r.json()["data"] if r.status_code == 200 else None  # 409 while the scheduler's run holds the lease

    return wait_for(attempt)


def test_run_history_shows_a_manager_only_their_team(api, team):
    # Company-wide round robin: team A's lead moves from alice to bob; team B has nobody to take carol's.
    r = create_rule(
        api, team.admin, name="1小时轮转", condition="no_follow_up_after_assign", thresholdHours=1, action="round_robin"
    )
    assert r.status_code == 201, r.text
    lead_a = api.lead(team.manager, name="甲客户")
    assert (
        api.client(team.manager)
        .patch(f"/api/customers/{lead_a['id']}/assign", json={"assignedTo": team.alice.id})
        .status_code
        == 200
    )
    lead_b = api.lead(team.manager_b, name="乙客户")
    assert (
        api.client(team.manager_b)
        .patch(f"/api/customers/{lead_b['id']}/assign", json={"assignedTo": team.carol.id})
        .status_code
        == 200
    )
    api.ctx.clock.advance(hours=2)
    _run_now(api, team.admin)  # the scheduler may take the leads first; either way they are handled by a run

    def b_failure_recorded():
        return any(f.get("customerId") == lead_b["id"] for run in _runs(api, team.admin) for f in run["failures"])

    wait_for(b_failure_recorded)
    admin_runs = _runs(api, team.admin)
    assert sum(run["moved"] for run in admin_runs) == 1 and sum(run["failed"] for run in admin_runs) >= 1

    a_runs = _runs(api, team.manager)
    assert sum(run["moved"] for run in a_runs) == 1
    assert sum(run["failed"] for run in a_runs) == 0
    assert all(run["failures"] == [] for run in a_runs)
    assert "乙客户" not in str(a_runs) and "孙娜" not in str(a_runs)

    b_runs = _runs(api, team.manager_b)
    assert sum(run["moved"] for run in b_runs) == 0 and sum(run["failed"] for run in b_runs) >= 1
    b_failures = [f for run in b_runs for f in run["failures"]]
    assert b_failures and {f["customerId"] for f in b_failures} == {lead_b["id"]}
    assert "甲客户" not in str(b_runs) and "李丽" not in str(b_runs)

    # A manager's own run covers their team; another team's manager does not see it at all.
    b_run = _run_now(api, team.manager_b)
    assert b_run["id"] in {run["id"] for run in _runs(api, team.manager_b)}
    assert b_run["id"] in {run["id"] for run in _runs(api, team.admin)}
    assert b_run["id"] not in {run["id"] for run in _runs(api, team.manager)}
    page = api.client(team.manager).get("/api/auto-transfer/runs").json()["data"]
    assert page["total"] == len(_runs(api, team.manager))

    # A manager without a team manages no team: their history is empty.
    loner = api.user("无团队经理", "manager", None)
    page = api.client(loner).get("/api/auto-transfer/runs").json()["data"]
    assert page["items"] == [] and page["total"] == 0
