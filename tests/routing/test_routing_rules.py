"""Distribution rules: a lead that arrives without an owner goes, at once, to the person (or pool) the first
matching rule picks — skipping people who cannot take it now — and that person hears of it.

Stories told over HTTP against a real server, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from support import Api, Person, ok, refused

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
