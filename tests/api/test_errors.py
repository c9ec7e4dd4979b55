"""Bad input never breaks the service: every refusal is a 4xx in the envelope, with a Chinese message and a code."""

from __future__ import annotations

from typing import Any

import httpx
from support.api import CJK, ok, refused
from support.leads import count, notes

from leadpush.leads.models import Customer

BIG = 10**20  # an integer no database column can hold


def envelope_4xx(r: httpx.Response) -> dict[str, Any]:
    assert 400 <= r.status_code < 500, (r.status_code, r.request.method, r.request.url, r.text)
    body = r.json()
    assert body["success"] is False and body["code"] and isinstance(body["code"], str), body
    assert CJK.search(body["message"]), body
    return body


def test_malformed_json_is_a_400_on_every_route_that_takes_a_body(api, team):
    lead = api.lead(team.manager)
    c = api.client(team.admin)
    routes = [
        ("POST", "/api/customers"),
        ("PATCH", f"/api/customers/{lead['id']}/assign"),
        ("PATCH", f"/api/customers/miniprogram/{lead['id']}/assign"),
        ("POST", "/api/customers/batch-assign"),
        ("POST", "/api/customers/public-pool/assign"),
        ("POST", f"/api/customers/{lead['id']}/release"),
        ("POST", f"/api/customers/{lead['id']}/follow-ups"),
        ("POST", "/api/users"),
        ("PATCH", f"/api/users/{team.bob.id}"),
    ]
    for method, path in routes:
        for raw in (b'{"assignedTo": ', b"{'assignedTo': 1}", b"\xff\xfe", b'{"a": 1,}'):
            r = c.request(method, path, content=raw, headers={"content-type": "application/json"})
            refused(r, 400, "invalid_json")
    assert ok(c.get(f"/api/customers/{lead['id']}"))["version"] == 1


def test_wrong_types_and_unknown_fields_are_validation_errors(api, team):
    lead = api.lead(team.manager)
    c = api.client(team.manager)
    assign = f"/api/customers/{lead['id']}/assign"
    for body in (
        {},
        {"assignedTo": "abc"},
        {"assignedTo": None},
        {"assignedTo": True},
        {"assignedTo": 1.5},
        {"assignedTo": [team.alice.id]},
        {"assignedTo": {"id": team.alice.id}},
        {"assignedTo": team.alice.id, "version": "latest"},
        {"assignedTo": team.alice.id, "owner": 3},  # a typo'd or unknown field is an error, not a silent no-op
        {"assigned_to_user": team.alice.id},
        [team.alice.id],
        "alice",
        None,
    ):
        body_r = refused(c.patch(assign, json=body), 422, "validation_error")
        assert isinstance(body_r["data"], list) and body_r["data"][0]["field"]
    for body in (
        {"customerIds": lead["id"], "assignedTo": team.alice.id},
        {"customerIds": [lead["id"], "x"], "assignedTo": team.alice.id},
        {"customerIds": [lead["id"], True], "assignedTo": team.alice.id},
        {"customerIds": None, "assignedTo": team.alice.id},
        {"customerIds": [lead["id"]]},
        {"customerIds": [lead["id"]], "assignedTo": team.alice.id, "dryRun": True},
    ):
        refused(c.post("/api/customers/batch-assign", json=body), 422, "validation_error")
        refused(c.post("/api/customers/public-pool/assign", json=body), 422, "validation_error")
    refused(c.post(f"/api/customers/{lead['id']}/release", json={"why": "x"}), 422, "validation_error")
    refused(c.post(f"/api/customers/{lead['id']}/release", json={"reason": "x" * 201}), 422, "validation_error")
    assert ok(c.get(f"/api/customers/{lead['id']}"))["ownerId"] is None and notes(api) == []


def test_lead_bodies_are_checked_field_by_field(api, team):
    c = api.client(team.manager)
    good = {"name": "张三", "phone": "13800138000", "source": "抖音"}
    for bad in (
        {**good, "phone": "abc"},
        {**good, "phone": "12"},
        {**good, "phone": "1380013800013800138000"},
        {**good, "phone": ""},
        {**good, "phone": 13800138000},
        {**good, "name": "   "},
        {**good, "name": "名" * 101},
        {**good, "status": "sold"},
        {**good, "ownerId": 3},
        {**good, "assignedTo": "someone"},
        {"name": "张三"},
        [good, {**good, "phone": "bad"}],
        [good, "x"],
        42,
    ):
        refused(c.post("/api/customers", json=bad), 422, "validation_error")
    assert count(api, Customer) == 0
    # Spaces, dashes and brackets in a phone number are fine; so is an international prefix.
    assert ok(c.post("/api/customers", json={**good, "phone": "+86 (138) 0013-8000"}), 201)["phone"] == "+8613800138000"


def test_unknown_ids_are_404s_with_a_code_saying_what_was_missing(api, team):
    lead = api.lead(team.manager)
    m, admin = api.client(team.manager), api.client(team.admin)
    for missing in (424242, 0, -1, BIG):
        # In a body, any number that names nobody is "not found".
        refused(m.patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": missing}), 404, "user_not_found")
        batch = {"customerIds": [lead["id"]], "assignedTo": missing}
        refused(m.post("/api/customers/batch-assign", json=batch), 404, "user_not_found")
        new_lead = {"name": "甲", "phone": "13800000000", "assignedTo": missing}
        refused(m.post("/api/customers", json=new_lead), 404, "user_not_found")
        pool = {"customerIds": [missing], "assignedTo": team.alice.id}
        data = ok(m.post("/api/customers/public-pool/assign", json=pool))
        assert [(f["customerId"], f["code"]) for f in data["failed"]] == [(missing, "customer_not_found")]
        if missing < 0:
            continue  # a negative number does not match the {id:int} routes at all (a plain 404)
        body = {"assignedTo": team.alice.id}
        refused(m.patch(f"/api/customers/{missing}/assign", json=body), 404, "customer_not_found")
        refused(m.patch(f"/api/customers/miniprogram/{missing}/assign", json=body), 404, "customer_not_found")
        for path in ("", "/follow-ups", "/assignments"):
            refused(admin.get(f"/api/customers/{missing}{path}"), 404, "customer_not_found")
        refused(admin.post(f"/api/customers/{missing}/claim"), 404, "customer_not_found")
        refused(admin.post(f"/api/customers/{missing}/release"), 404, "customer_not_found")
        refused(admin.post(f"/api/customers/{missing}/follow-ups", json={"content": "x"}), 404, "customer_not_found")
        refused(admin.patch(f"/api/users/{missing}", json={"team": "A"}), 404, "user_not_found")
        refused(admin.post(f"/api/users/{missing}/tokens"), 404, "user_not_found")
    refused(m.patch("/api/customers/-1/assign", json={"assignedTo": team.alice.id}), 404, "not_found")
    assert ok(admin.get("/api/customers", params={"owner": str(2**40)}))["items"] == []
    assert ok(m.get(f"/api/customers/{lead['id']}"))["ownerId"] is None and notes(api) == []


def test_no_input_however_odd_makes_the_server_fail(api, team):
    lead = api.lead(team.manager, assignedTo=team.alice.id)
    m, admin = api.client(team.manager), api.client(team.admin)
    odd = ["\x00", "a\x00b", "😀" * 30, "' OR 1=1 --", "%_\\", " ", "名" * 300]
    answers: list[httpx.Response] = []
    for text in odd:
        answers += [
            admin.get("/api/customers", params={"keyword": text[:100]}),
            admin.get("/api/customers", params={"status": text[:16], "source": text[:100]}),
            admin.get("/api/customers", params={"owner": text[:20]}),
            admin.get("/api/customers/public-pool", params={"keyword": text[:100]}),
            m.post("/api/customers", json={"name": text, "phone": "13800138000", "source": text, "note": text}),
            m.post(f"/api/customers/{lead['id']}/follow-ups", json={"content": text}),
            admin.post("/api/users", json={"name": text, "role": "sales", "wecomUserid": text}),
            admin.post("/api/users", json={"name": "odd team", "role": "sales", "team": text}),  # no such team
            admin.patch(f"/api/users/{team.bob.id}", json={"team": text}),
        ]
    json_type = {"content-type": "application/json"}
    answers += [
        m.post(f"/api/customers/{lead['id']}/release", json={"reason": "a\x00b"}),
        m.post(
            "/api/customers/batch-assign", json={"customerIds": [BIG, -5, 0, lead["id"]], "assignedTo": team.bob.id}
        ),
        admin.get("/api/customers", params={"owner": "²"}),
        admin.get("/api/customers", params={"page": BIG}),
        admin.post(
            "/api/customers", content=b'{"name": "x", "phone": "13800138000"}', headers={"content-type": "text/plain"}
        ),
        admin.post(
            "/api/customers", content=b"name=x&phone=1", headers={"content-type": "application/x-www-form-urlencoded"}
        ),
        admin.post("/api/customers", content=b"[" * 5000 + b"]" * 5000, headers=json_type),
    ]
    no_route = admin.get("/api/customers/abc")
    wrong_method = admin.delete(f"/api/customers/{lead['id']}")
    too_big = admin.post("/api/customers/batch-assign", content=b"0" * 3_000_000, headers=json_type)
    for r in [*answers, no_route, wrong_method, too_big]:
        assert r.status_code < 500, (r.request.method, r.request.url, r.text)
        if r.status_code >= 400:
            envelope_4xx(r)
    refused(no_route, 404, "not_found")
    refused(wrong_method, 405, "method_not_allowed")
    refused(too_big, 413, "payload_too_large")
    # The odd names that were accepted are stored cleaned; a name of nothing but control characters was refused.
    names = {u["name"] for u in ok(admin.get("/api/users"))}
    assert "ab" in names and "a\x00b" not in names


def test_every_error_the_assignment_flow_can_give_is_in_the_envelope(api, team):
    """Walk through the refusals a front end must handle and check each one's shape and wording."""
    lead = api.lead(team.manager)
    m = api.client(team.manager)
    cases = [
        (api.client().patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": 1}), 401, "unauthorized"),
        (api.client("nope").patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": 1}), 401, "invalid_token"),
        (
            api.client(team.alice).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": team.bob.id}),
            403,
            "forbidden",
        ),
        (m.patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": team.carol.id}), 403, "forbidden"),
        (
            m.patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": team.bob.id, "version": 7}),
            409,
            "version_conflict",
        ),
        (
            m.post("/api/customers/batch-assign", json={"customerIds": [], "assignedTo": team.bob.id}),
            422,
            "batch_empty",
        ),
        (
            m.post(
                "/api/customers/public-pool/assign",
                json={"customerIds": list(range(1, 1002)), "assignedTo": team.bob.id},
            ),
            422,
            "batch_too_large",
        ),
        (m.post(f"/api/customers/{lead['id']}/release"), 409, "not_owned"),
    ]
    for r, status, code in cases:
        refused(r, status, code)
    assert len({r.json()["message"] for r, _, _ in cases}) >= 6  # messages say what went wrong, not one generic text
