"""Teams are rows: admins create, rename and delete them; people and transfer rules name a real team.

A rename follows every member, rule and run record in one transaction (the `team` columns are foreign
keys to `teams.name` with ON UPDATE CASCADE); a team with members or rules cannot be deleted; an unknown
team is refused. The API runs on SQLite and PostgreSQL (the `api` fixture), and the migration turns a
database of free-text team names into teams on both.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from support import DATABASES, database_url, ok, refused

from leadpush.db import make_engine
from leadpush.migrate import upgrade

RULE = {"condition": "not_won_within", "thresholdDays": 30, "action": "public_pool"}


def teams_by_name(client) -> dict[str, dict]:
    return {t["name"]: t for t in ok(client.get("/api/teams"))}


def test_admins_and_managers_see_each_team_with_its_members_rules_and_managers(api, team):
    admin = api.client(team.admin)
    ok(admin.post("/api/auto-transfer/rules", json={"name": "A组30天", "team": "A", **RULE}), 201)
    ok(admin.patch(f"/api/users/{team.bob.id}", json={"active": False}))
    for who in (team.admin, team.manager):
        teams = teams_by_name(api.client(who))
        assert list(teams) == ["A", "B"]
        a = teams["A"]
        assert (a["memberCount"], a["activeMemberCount"], a["ruleCount"]) == (3, 2, 1)
        assert [m["name"] for m in a["managers"]] == ["王经理"]
        assert [m["name"] for m in teams["B"]["managers"]] == ["陈经理"]
    # Salespeople get the names only (to show and pick a team), not who is in which.
    sales = ok(api.client(team.alice).get("/api/teams"))
    assert [t["name"] for t in sales] == ["A", "B"]
    assert all(t["memberCount"] is None and t["managers"] is None for t in sales)


def test_a_rename_moves_members_rules_and_run_history_with_the_team(api, team):
    admin, manager = api.client(team.admin), api.client(team.manager)
    rule = ok(manager.post("/api/auto-transfer/rules", json={"name": "A组30天", "team": "A", **RULE}), 201)
    run = ok(manager.post("/api/auto-transfer/run", json={"dryRun": False}))
    team_a = teams_by_name(admin)["A"]

    renamed = ok(admin.patch(f"/api/teams/{team_a['id']}", json={"name": " 华东一组 "}))
    assert renamed["name"] == "华东一组" and renamed["memberCount"] == 3

    people = {u["name"]: u["team"] for u in ok(admin.get("/api/users"))}
    assert people == {**people, "王经理": "华东一组", "李丽": "华东一组", "赵强": "华东一组", "陈经理": "B"}
    assert ok(admin.get("/api/auto-transfer/rules"))[0]["team"] == "华东一组"
    # The manager still manages their (renamed) team: its people, its rules, its run history.
    assert ok(api.client(team.alice).get("/api/me"))["team"] == "华东一组"
    assert [u["name"] for u in ok(manager.get("/api/users"))] == ["王经理", "李丽", "赵强"]
    ok(manager.patch(f"/api/auto-transfer/rules/{rule['id']}", json={"enabled": False}))
    assert [r["id"] for r in ok(manager.get("/api/auto-transfer/runs"))["items"]] == [run["id"]]
    ok(admin.post("/api/users", json={"name": "新人", "role": "sales", "team": "华东一组"}), 201)
    refused(admin.post("/api/users", json={"name": "旧名", "role": "sales", "team": "A"}), 422, "team_not_found")

    # Names stay unique, whatever the case of a rename.
    refused(admin.patch(f"/api/teams/{team_a['id']}", json={"name": "B"}), 409, "team_exists")
    refused(admin.post("/api/teams", json={"name": "华东一组"}), 409, "team_exists")
    refused(admin.post("/api/teams", json={"name": "   "}), 422, "invalid_team_name")
    refused(admin.patch("/api/teams/98765", json={"name": "X"}), 404, "team_not_found")
    assert ok(admin.patch(f"/api/teams/{team_a['id']}", json={"name": "华东一组"}))["name"] == "华东一组"


def test_a_team_with_people_or_rules_cannot_be_deleted_an_empty_one_can(api, team):
    admin = api.client(team.admin)
    created = ok(admin.post("/api/teams", json={"name": "华南组"}), 201)
    assert created["memberCount"] == 0 and created["managers"] == []
    ok(admin.patch(f"/api/users/{team.carol.id}", json={"team": "华南组"}))
    rule = ok(admin.post("/api/auto-transfer/rules", json={"name": "华南规则", "team": "华南组", **RULE}), 201)

    body = refused(admin.delete(f"/api/teams/{created['id']}"), 409, "team_not_empty")
    assert body["data"] == {"members": 1, "rules": 1}
    assert "1 名成员" in body["message"] and "1 条流转规则" in body["message"]
    ok(admin.patch(f"/api/users/{team.carol.id}", json={"active": False}))
    refused(admin.delete(f"/api/teams/{created['id']}"), 409, "team_not_empty")  # inactive people count too

    ok(admin.patch(f"/api/users/{team.carol.id}", json={"team": None}))
    ok(admin.delete(f"/api/auto-transfer/rules/{rule['id']}"))
    assert ok(admin.delete(f"/api/teams/{created['id']}"))["name"] == "华南组"
    assert list(teams_by_name(admin)) == ["A", "B"]
    refused(admin.delete(f"/api/teams/{created['id']}"), 404, "team_not_found")


def test_a_team_that_does_not_exist_is_refused_for_people_and_rules(api, team):
    admin, manager = api.client(team.admin), api.client(team.manager)
    refused(admin.post("/api/users", json={"name": "周杰", "role": "sales", "team": "Z"}), 422, "team_not_found")
    refused(admin.patch(f"/api/users/{team.bob.id}", json={"team": "Z"}), 422, "team_not_found")
    refused(admin.post("/api/auto-transfer/rules", json={"name": "Z组", "team": "Z", **RULE}), 422, "team_not_found")
    rule = ok(admin.post("/api/auto-transfer/rules", json={"name": "全公司", **RULE}), 201)
    refused(admin.patch(f"/api/auto-transfer/rules/{rule['id']}", json={"team": "Z"}), 422, "team_not_found")
    refused(manager.post("/api/auto-transfer/rules", json={"name": "B组", "team": "B", **RULE}), 403, "forbidden")
    assert ok(admin.get("/api/auto-transfer/rules"))[0]["team"] is None
    assert ok(api.client(team.bob).get("/api/me"))["team"] == "A"
    assert [u["name"] for u in ok(admin.get("/api/users"))] == ["管理员", "王经理", "李丽", "赵强", "陈经理", "孙娜"]


def test_only_admins_change_teams(api, team):
    team_b = teams_by_name(api.client(team.admin))["B"]
    for who in (team.manager, team.manager_b, team.alice):
        client = api.client(who)
        refused(client.post("/api/teams", json={"name": "新团队"}), 403, "forbidden")
        refused(client.patch(f"/api/teams/{team_b['id']}", json={"name": "新名字"}), 403, "forbidden")
        refused(client.delete(f"/api/teams/{team_b['id']}"), 403, "forbidden")
    refused(api.client().get("/api/teams"), 401, "unauthorized")
    assert list(teams_by_name(api.client(team.admin))) == ["A", "B"]


# --- the migration ------------------------------------------------------------------------------------------

# A database from before teams, with people, their tokens and leads: every later migration must keep them.
FREE_TEXT_TEAMS = "0002"


@pytest.fixture(params=DATABASES)
def blank_database(request: pytest.FixtureRequest, tmp_path: Path):
    gen = database_url(request.param, str(tmp_path))
    url = next(gen)
    try:
        yield url
    finally:
        gen.close()


def test_the_migration_turns_free_text_team_names_into_teams(blank_database):
    url = blank_database
    upgrade(url, FREE_TEXT_TEAMS)
    engine = make_engine(url)  # as the service connects (SQLite: foreign_keys=ON)
    stamp = "2026-01-01 00:00:00"
    true = "true" if engine.dialect.name == "postgresql" else "1"
    with engine.begin() as c:
        for name, role, team in [
            ("王经理", "manager", "A"),
            ("李丽", "sales", "A"),
            ("孙娜", "sales", "B"),
            ("管理员", "admin", None),
        ]:
            c.execute(
                text(f"INSERT INTO users (name, role, team, active, created_at) VALUES (:n, :r, :t, {true}, :at)"),
                {"n": name, "r": role, "t": team, "at": stamp},
            )
        c.execute(
            text("INSERT INTO api_tokens (user_id, token_hash, prefix, created_at) VALUES (2, 'h', 'lp_x', :at)"),
            {"at": stamp},
        )
        c.execute(
            text(
                "INSERT INTO customers (name, phone, source, status, note, owner_id, version, created_at, updated_at)"
                " VALUES ('张三', '13800138000', '展会', 'new', '', 2, 1, :at, :at)"
            ),
            {"at": stamp},
        )
        for name, team in [("A组规则", "A"), ("C组规则", "C"), ("全公司", None)]:
            c.execute(
                text(
                    "INSERT INTO transfer_rules (name, team, condition, threshold_hours, exempt_statuses, action,"
                    f" enabled, created_at) VALUES (:n, :t, 'not_won_within', 24, '[]', 'public_pool', {true}, :at)"
                ),
                {"n": name, "t": team, "at": stamp},
            )

    upgrade(url)
    try:
        with engine.begin() as c:
            assert c.execute(text("SELECT name FROM teams ORDER BY name")).scalars().all() == ["A", "B", "C"]
            # Nothing else was touched: the token still signs 李丽 in, the lead is still hers.
            assert c.execute(text("SELECT user_id FROM api_tokens")).scalars().all() == [2]
            assert c.execute(text("SELECT owner_id FROM customers")).scalars().all() == [2]
            assert c.execute(text("SELECT name, team FROM users ORDER BY id")).all() == [
                ("王经理", "A"),
                ("李丽", "A"),
                ("孙娜", "B"),
                ("管理员", None),
            ]
            # A rename reaches members and rules (ON UPDATE CASCADE).
            c.execute(text("UPDATE teams SET name = '华东一组' WHERE name = 'A'"))
            assert c.execute(text("SELECT team FROM users WHERE id = 2")).scalar() == "华东一组"
            assert c.execute(text("SELECT team FROM transfer_rules WHERE name = 'A组规则'")).scalar() == "华东一组"
        # A name that is no team is refused by the database itself.
        with pytest.raises(IntegrityError), engine.begin() as c:
            c.execute(text("UPDATE users SET team = 'Z' WHERE id = 3"))
        with pytest.raises(IntegrityError), engine.begin() as c:
            c.execute(text("UPDATE transfer_rules SET team = 'Z' WHERE name = 'C组规则'"))
    finally:
        engine.dispose()
