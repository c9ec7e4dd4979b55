"""Users, roles and API tokens: who gets in, who sees whom, who may manage people."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from support.api import ok, refused

from leadpush.users.models import ApiToken

# Every route that needs a signed-in user (method, path, body).
PROTECTED = [
    ("GET", "/api/me", None),
    ("GET", "/api/users", None),
    ("POST", "/api/users", {"name": "新人", "role": "sales"}),
    ("PATCH", "/api/users/1", {"team": "A"}),
    ("POST", "/api/users/1/tokens", None),
    ("POST", "/api/users/1/tokens/revoke", None),
    ("POST", "/api/customers", {"name": "张三", "phone": "13800138000", "source": "抖音"}),
    ("GET", "/api/customers", None),
    ("GET", "/api/customers/public-pool", None),
    ("GET", "/api/customers/1", None),
    ("POST", "/api/customers/1/follow-ups", {"content": "电话沟通"}),
    ("GET", "/api/customers/1/follow-ups", None),
    ("PATCH", "/api/customers/1/assign", {"assignedTo": 1}),
    ("PATCH", "/api/customers/miniprogram/1/assign", {"assignedTo": 1}),
    ("POST", "/api/customers/batch-assign", {"customerIds": [1], "assignedTo": 1}),
    ("POST", "/api/customers/public-pool/assign", {"customerIds": [1], "assignedTo": 1}),
    ("POST", "/api/customers/1/claim", None),
    ("POST", "/api/customers/1/release", None),
    ("GET", "/api/customers/1/assignments", None),
    ("GET", "/api/notifications", None),
    ("POST", "/api/auth/logout", None),
    ("POST", "/api/me/password", {"newPassword": "long-enough-1"}),
    ("POST", "/api/users/1/password", {"newPassword": "long-enough-1"}),
    ("GET", "/api/tokens", None),
    ("POST", "/api/tokens", {"name": "对接"}),
    ("DELETE", "/api/tokens/1", None),
    ("POST", "/api/auto-transfer/rules/preview", {"id": 1}),
]


def test_every_route_turns_away_requests_without_a_valid_token(api, team):
    lead = api.lead(team.manager)
    assert lead["id"] == 1
    revoked = api.user("离职员工", "sales", "A")
    ok(api.client(team.admin).post(f"/api/users/{revoked.id}/tokens/revoke"))
    anonymous = api.client()
    strangers = [
        (api.client("lp_not-a-real-token"), "invalid_token"),
        (api.client(revoked), "invalid_token"),
        (api.client("x" * 500), "invalid_token"),
    ]
    basic = api.client()
    basic.headers["Authorization"] = "Basic YWRtaW46YWRtaW4="
    for method, path, body in PROTECTED:
        kw = {"json": body} if body is not None else {}
        refused(anonymous.request(method, path, **kw), 401, "unauthorized")
        refused(basic.request(method, path, **kw), 401, "unauthorized")
        for client, code in strangers:
            refused(client.request(method, path, **kw), 401, code)
    # Nothing happened on the way.
    assert ok(api.client(team.admin).get("/api/customers/1"))["version"] == 1


def test_each_person_sees_who_they_are(api, team):
    me = ok(api.client(team.alice).get("/api/me"))
    assert me == {
        **me,
        "id": team.alice.id,
        "name": "李丽",
        "role": "sales",
        "team": "A",
        "wechatOpenid": "o-alice",
        "wecomUserid": "alice",
        "active": True,
    }
    assert "token" not in me and "tokenHash" not in me
    assert ok(api.client(team.admin).get("/api/me"))["role"] == "admin"


def test_the_people_list_shows_admins_everyone_managers_their_team_and_sales_themselves(api, team):
    def names(person):
        return [u["name"] for u in ok(api.client(person).get("/api/users"))]

    assert names(team.admin) == ["管理员", "王经理", "李丽", "赵强", "陈经理", "孙娜"]
    assert names(team.manager) == ["王经理", "李丽", "赵强"]
    assert names(team.manager_b) == ["陈经理", "孙娜"]
    assert names(team.bob) == ["赵强"]


def test_an_admin_adds_a_salesperson_whose_token_works_at_once(api, team):
    body = {"name": "周杰", "role": "sales", "team": "A", "wechatOpenid": "o-zhou", "capacity": 50}
    created = ok(api.client(team.admin).post("/api/users", json=body), 201)
    user, token = created["user"], created["token"]
    assert user["name"] == "周杰" and user["wechatOpenid"] == "o-zhou" and user["capacity"] == 50
    assert token.startswith("lp_") and len(token) > 30
    assert ok(api.client(token).get("/api/me"))["id"] == user["id"]
    # The manager of team A can now hand leads to the newcomer.
    lead = api.lead(team.manager)
    r = api.client(team.manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": user["id"]})
    assert ok(r)["ownerName"] == "周杰"
    # Tokens are kept only as hashes.
    with api.ctx.db.read() as s:
        stored = list(s.scalars(select(ApiToken.token_hash)))
    assert token not in stored and all(len(h) == 64 for h in stored)


@pytest.mark.parametrize("who", ["manager", "alice"])
def test_only_admins_manage_people_and_tokens(api, team, who):
    person = getattr(team, who)
    c = api.client(person)
    refused(c.post("/api/users", json={"name": "某人", "role": "sales"}), 403, "forbidden")
    refused(c.patch(f"/api/users/{team.bob.id}", json={"capacity": 1}), 403, "forbidden")
    refused(c.post(f"/api/users/{team.bob.id}/tokens"), 403, "forbidden")
    refused(c.post(f"/api/users/{team.bob.id}/tokens/revoke"), 403, "forbidden")
    refused(c.patch(f"/api/users/{person.id}", json={"role": "admin"}), 403, "forbidden")
    assert ok(api.client(team.bob).get("/api/me"))["capacity"] is None
    assert ok(c.get("/api/me"))["role"] == person.role


def test_an_admin_cannot_create_nonsense_people(api, team):
    admin = api.client(team.admin)
    refused(admin.post("/api/users", json={"name": "某人", "role": "boss"}), 422, "invalid_role")
    refused(admin.post("/api/users", json={"name": "   ", "role": "sales"}), 422, "invalid_name")
    refused(admin.post("/api/users", json={"name": "某人"}), 422, "validation_error")
    refused(admin.post("/api/users", json={"name": "某人", "role": "sales", "age": 3}), 422, "validation_error")
    refused(admin.post("/api/users", json={"name": "某人", "role": "sales", "capacity": -1}), 422, "validation_error")
    # An openid or WeCom id belongs to one person only.
    refused(
        admin.post("/api/users", json={"name": "冒名", "role": "sales", "wechatOpenid": "o-alice"}),
        409,
        "identity_taken",
    )
    refused(
        admin.post("/api/users", json={"name": "冒名", "role": "sales", "wecomUserid": "alice"}), 409, "identity_taken"
    )
    assert len(ok(admin.get("/api/users"))) == 6


def test_an_admin_updates_and_deactivates_a_person(api, team):
    admin = api.client(team.admin)
    moved = ok(admin.patch(f"/api/users/{team.bob.id}", json={"team": "B", "wecomUserid": "bob", "capacity": 3}))
    assert (moved["team"], moved["wecomUserid"], moved["capacity"]) == ("B", "bob", 3)
    # Bob now belongs to team B: manager B can hand him leads, manager A no longer can.
    lead = api.lead(team.admin)
    body = {"assignedTo": team.bob.id}
    refused(api.client(team.manager).patch(f"/api/customers/{lead['id']}/assign", json=body), 403, "forbidden")
    ok(api.client(team.manager_b).patch(f"/api/customers/{lead['id']}/assign", json=body))
    # Clearing a field with "" or null; the ones that cannot be empty refuse it.
    cleared = ok(admin.patch(f"/api/users/{team.bob.id}", json={"wecomUserid": "", "capacity": None}))
    assert cleared["wecomUserid"] is None and cleared["capacity"] is None
    for bad in ({"name": None}, {"name": ""}, {"active": None}, {"role": None}, {"role": "boss"}):
        r = admin.patch(f"/api/users/{team.bob.id}", json=bad)
        assert r.status_code == 422 and r.json()["code"] in ("validation_error", "invalid_role", "invalid_name"), r.text
    refused(admin.patch(f"/api/users/{team.bob.id}", json={"wechatOpenid": "o-alice"}), 409, "identity_taken")
    refused(admin.patch("/api/users/98765", json={"team": "A"}), 404, "user_not_found")

    # Deactivated: the token stops working and nobody can give him leads.
    ok(admin.patch(f"/api/users/{team.bob.id}", json={"active": False}))
    refused(api.client(team.bob).get("/api/me"), 401, "invalid_token")
    other = api.lead(team.admin)
    r = api.client(team.manager_b).patch(f"/api/customers/{other['id']}/assign", json=body)
    refused(r, 409, "user_inactive")
    ok(admin.patch(f"/api/users/{team.bob.id}", json={"active": True}))
    assert ok(api.client(team.bob).get("/api/me"))["active"] is True


def test_an_admin_issues_a_second_token_and_revokes_them_all(api, team):
    admin = api.client(team.admin)
    second = ok(admin.post(f"/api/users/{team.alice.id}/tokens"), 201)["token"]
    assert second != team.alice.token
    assert ok(api.client(second).get("/api/me"))["id"] == team.alice.id
    assert ok(api.client(team.alice).get("/api/me"))["id"] == team.alice.id

    ok(admin.post(f"/api/users/{team.alice.id}/tokens/revoke"))
    refused(api.client(second).get("/api/me"), 401, "invalid_token")
    refused(api.client(team.alice).get("/api/me"), 401, "invalid_token")
    # A fresh one works again; others' tokens were never touched.
    third = ok(admin.post(f"/api/users/{team.alice.id}/tokens"), 201)["token"]
    ok(api.client(third).get("/api/me"))
    ok(api.client(team.bob).get("/api/me"))
    refused(admin.post("/api/users/98765/tokens"), 404, "user_not_found")
    refused(admin.post("/api/users/98765/tokens/revoke"), 404, "user_not_found")


def test_an_admin_cannot_deactivate_or_demote_themselves(api, team):
    admin = api.client(team.admin)
    refused(admin.patch(f"/api/users/{team.admin.id}", json={"active": False}), 409, "cannot_demote_self")
    refused(admin.patch(f"/api/users/{team.admin.id}", json={"role": "manager"}), 409, "cannot_demote_self")
    assert ok(admin.patch(f"/api/users/{team.admin.id}", json={"capacity": 10, "role": "admin"}))["capacity"] == 10
    other = api.user("第二管理员", "admin", None)
    assert ok(api.client(other).patch(f"/api/users/{team.admin.id}", json={"role": "manager"}))["role"] == "manager"
