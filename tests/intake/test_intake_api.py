"""Lead intake: an admin sets up a lead source; forms, ad platforms and other systems send it leads with the
source's intake token (one, or a campaign burst) or through its signed form webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from support import Api, ok, refused
from support.leads import at_once

SOURCE = "抖音表单"


def new_source(api: Api, admin: Any, **fields: Any) -> dict:
    """A lead source as its creation answers it: the source, its token and its signing secret (shown once)."""
    body = {"key": SOURCE, "name": "抖音落地页", **fields}
    return ok(api.client(admin).post("/api/lead-sources", json=body), 201)


def send(api: Api, token: str, body: Any) -> httpx.Response:
    return api.client(token).post("/api/leads/inbound", json=body, timeout=120)


def lead_of(api: Api, who: Any, lead_id: int) -> dict:
    return ok(api.client(who).get(f"/api/customers/{lead_id}"))


def signed(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Leadpush-Timestamp": str(timestamp), "X-Leadpush-Signature": f"sha256={mac}"}


def form_url(key: str = SOURCE) -> str:
    return f"/api/leads/inbound/{quote(key)}/form"


def now_ts(api: Api) -> int:
    return int(api.ctx.clock.now().timestamp())


def notifications(api: Api, who: Any) -> list[dict]:
    return ok(api.client(who).get("/api/notifications", params={"after": 0}))["items"]


# --- lead sources -----------------------------------------------------------------------------------------------


def test_an_admin_creates_a_source_and_sees_its_token_and_secret_only_once(api, team):
    created = new_source(api, team.admin, defaultRegion="上海", defaultTags=["抖音"])
    token, secret = created["token"], created["signingSecret"]
    assert token.startswith("lpi_") and secret.startswith("lpsig_")
    assert created["source"]["tokenPrefix"] == token[:8]
    assert created["formUrl"].endswith("/api/leads/inbound/" + quote(SOURCE) + "/form")
    assert created["source"]["duplicatePolicy"] == "merge"

    listed = api.client(team.admin).get("/api/lead-sources")
    assert [s["key"] for s in ok(listed)] == [SOURCE]
    assert token not in listed.text and secret not in listed.text
    one = api.client(team.admin).get(f"/api/lead-sources/{created['source']['id']}")
    assert token not in one.text and secret not in one.text
    with api.ctx.db.read() as s:  # stored hashed, never as given
        from leadpush.intake.models import LeadSource

        row = s.query(LeadSource).one()
        assert row.token_hash != token and token not in row.token_hash

    refused(
        api.client(team.admin).post("/api/lead-sources", json={"key": SOURCE, "name": "又一个"}),
        409,
        "source_key_taken",
    )
    for who in (team.manager, team.alice):
        refused(api.client(who).get("/api/lead-sources"), 403, "forbidden")
        refused(api.client(who).post("/api/lead-sources", json={"key": "x", "name": "x"}), 403, "forbidden")


def test_an_admin_edits_rotates_disables_and_deletes_a_source(api, team):
    created = new_source(api, team.admin)
    sid, old = created["source"]["id"], created["token"]
    admin = api.client(team.admin)
    changed = ok(
        admin.patch(
            f"/api/lead-sources/{sid}",
            json={"fieldMapping": {"mobile": "phone"}, "duplicatePolicy": "flag", "name": "抖音"},
        )
    )
    assert changed["fieldMapping"] == {"mobile": "phone"} and changed["duplicatePolicy"] == "flag"
    refused(admin.patch(f"/api/lead-sources/{sid}", json={"duplicatePolicy": "maybe"}), 422, "validation_error")
    refused(admin.patch(f"/api/lead-sources/{sid}", json={"fieldMapping": {"a": "owner"}}), 422, "validation_error")
    ok(send(api, old, {"mobile": "13800000001"}), 201)

    rotated = ok(admin.post(f"/api/lead-sources/{sid}/rotate"))
    assert rotated["token"] != old and rotated["signingSecret"] != created["signingSecret"]
    refused(send(api, old, {"phone": "13800000002"}), 401, "invalid_intake_token")
    ok(send(api, rotated["token"], {"phone": "13800000002"}), 201)

    ok(admin.patch(f"/api/lead-sources/{sid}", json={"enabled": False}))
    refused(send(api, rotated["token"], {"phone": "13800000003"}), 403, "source_disabled")
    ok(admin.patch(f"/api/lead-sources/{sid}", json={"enabled": True}))

    ok(admin.delete(f"/api/lead-sources/{sid}"))
    refused(send(api, rotated["token"], {"phone": "13800000004"}), 401, "invalid_intake_token")
    refused(admin.get(f"/api/lead-sources/{sid}"), 404, "source_not_found")
    # Its leads stay, with their source label.
    page = ok(admin.get("/api/customers", params={"source": SOURCE}))
    assert page["total"] == 2


def test_an_intake_token_only_opens_the_inbound_endpoints_and_a_user_token_does_not_open_them(api, team):
    token = new_source(api, team.admin)["token"]
    refused(send(api, team.admin.token, {"phone": "13800000001"}), 401, "intake_token_required")
    refused(api.client().post("/api/leads/inbound", json={"phone": "13800000001"}), 401, "unauthorized")
    refused(send(api, "lpi_not-a-token", {"phone": "13800000001"}), 401, "invalid_intake_token")
    refused(api.client(token).get("/api/me"), 401, "intake_token_not_allowed")
    refused(api.client(token).get("/api/customers"), 401, "intake_token_not_allowed")
    refused(
        api.client(token).post("/api/customers", json={"name": "x", "phone": "13800000001"}),
        401,
        "intake_token_not_allowed",
    )
    refused(api.client(token).get("/api/lead-sources"), 401, "intake_token_not_allowed")


# --- one lead ---------------------------------------------------------------------------------------------------


def test_a_lead_comes_in_once_and_its_repeat_answers_the_same_lead(api, team):
    token = new_source(api, team.admin, defaultRegion="上海", defaultTags=["抖音"])["token"]
    first = ok(
        send(api, token, {"name": "张三", "phone": "138-0013-8000", "externalId": "dy-1", "tags": ["装修"]}), 201
    )
    assert first["created"] is True and first["duplicate"] is None and first["customerId"]
    lead = lead_of(api, team.admin, first["customerId"])
    assert lead["source"] == SOURCE and lead["phone"] == "13800138000" and lead["region"] == "上海"
    assert lead["tags"] == ["装修", "抖音"] and lead["inPool"] is True and lead["externalId"] == "dy-1"

    again = send(api, token, {"name": "张三", "phone": "13800138000", "externalId": "dy-1"})
    repeat = ok(again, 200)
    assert repeat["duplicate"] == "external_id" and repeat["customerId"] == first["customerId"]
    assert repeat["created"] is False
    assert ok(api.client(team.admin).get("/api/customers", params={"source": SOURCE}))["total"] == 1


def test_a_lead_without_a_phone_or_with_a_bad_one_is_refused_with_the_field(api, team):
    token = new_source(api, team.admin)["token"]
    body = refused(send(api, token, {"name": "张三"}), 422, "validation_error")
    assert body["data"] == [{"field": "phone", "message": "缺少电话号码"}]
    body = refused(send(api, token, {"name": "张三", "phone": "abc", "tags": {"x": 1}}), 422, "validation_error")
    assert {d["field"] for d in body["data"]} == {"phone", "tags"}
    refused(
        api.client(token).post("/api/leads/inbound", content=b"{nope", headers={"Content-Type": "application/json"}),
        400,
        "invalid_json",
    )
    refused(send(api, token, "张三"), 422, "validation_error")


def test_the_source_mapping_reads_nested_fields_and_keeps_the_rest_in_the_note(api, team):
    mapping = {
        "contact.mobile": "phone",
        "contact.name": "name",
        "city": "region",
        "interest": "tags",
        "message": "note",
        "clue_id": "externalId",
    }
    token = new_source(api, team.admin, fieldMapping=mapping, defaultTags=["抖音"])["token"]
    body = {
        "contact": {"mobile": 13900139000, "name": "李四"},
        "city": "杭州",
        "interest": "装修,全屋定制",
        "message": "想了解报价",
        "clue_id": 778899,
        "budget": "20万",
        "ad": {"campaign": "双11"},
    }
    item = ok(send(api, token, body), 201)
    lead = lead_of(api, team.admin, item["customerId"])
    assert (lead["name"], lead["phone"], lead["region"]) == ("李四", "13900139000", "杭州")
    assert lead["tags"] == ["装修", "全屋定制", "抖音"] and lead["externalId"] == "778899"
    assert lead["note"].startswith("想了解报价")
    assert "budget：20万" in lead["note"] and 'ad：{"campaign":"双11"}' in lead["note"]
    unnamed = ok(send(api, token, {"contact": {"mobile": "13900139001"}}), 201)
    assert lead_of(api, team.admin, unnamed["customerId"])["name"] == "未留姓名"


# --- phone duplicates -------------------------------------------------------------------------------------------


def test_merge_policy_appends_to_the_open_lead_and_tells_its_owner(api, team):
    token = new_source(api, team.admin)["token"]
    existing = api.lead(team.manager, name="张三", phone="13800138000", assignedTo=team.alice.id)
    before = [n for n in notifications(api, team.alice) if n["type"] == "lead_duplicate"]
    assert before == []

    merged = ok(
        send(api, token, {"name": "张先生", "phone": "13800138000", "note": "还想看样板间", "externalId": "m-1"})
    )
    assert merged["merged"] is True and merged["customerId"] == existing["id"] and merged["duplicate"] == "phone"
    assert merged["created"] is False and merged["ownerId"] == team.alice.id
    lead = lead_of(api, team.alice, existing["id"])
    assert "再次咨询" in lead["note"] and "还想看样板间" in lead["note"] and "张先生" in lead["note"]
    said = [n for n in notifications(api, team.alice) if n["type"] == "lead_duplicate"]
    assert [n["title"] for n in said] == ["客户 张三 再次咨询"]
    assert said[0]["data"]["customerId"] == existing["id"] and said[0]["data"]["source"] == SOURCE

    # The same submission again: answered from its external id, not merged (or notified) twice.
    repeat = ok(
        send(api, token, {"name": "张先生", "phone": "13800138000", "note": "还想看样板间", "externalId": "m-1"})
    )
    assert repeat["duplicate"] == "external_id" and repeat["customerId"] == existing["id"] and repeat["merged"] is True
    assert len([n for n in notifications(api, team.alice) if n["type"] == "lead_duplicate"]) == 1
    assert lead_of(api, team.alice, existing["id"])["note"].count("还想看样板间") == 1
    assert ok(api.client(team.admin).get("/api/customers"))["total"] == 1


def test_a_closed_lead_with_the_same_phone_is_not_a_duplicate(api, team):
    token = new_source(api, team.admin)["token"]
    old = api.lead(team.manager, phone="13800138000", status="lost")
    item = ok(send(api, token, {"phone": "13800138000"}), 201)
    assert item["customerId"] != old["id"] and item["duplicate"] is None


def test_flag_policy_creates_the_lead_and_points_at_the_one_it_repeats(api, team):
    token = new_source(api, team.admin, duplicatePolicy="flag")["token"]
    existing = api.lead(team.manager, name="张三", phone="13800138000", assignedTo=team.alice.id)
    item = ok(send(api, token, {"name": "张三", "phone": "13800138000"}), 201)
    assert item["created"] is True and item["duplicate"] == "phone" and item["duplicateOf"] == existing["id"]
    lead = lead_of(api, team.admin, item["customerId"])
    assert lead["duplicateOfId"] == existing["id"] and lead["inPool"] is True


# --- bursts -----------------------------------------------------------------------------------------------------


def test_a_campaign_burst_is_saved_at_once_and_bad_items_are_reported_by_index(api, team):
    token = new_source(api, team.admin, fieldMapping={"tel": "phone", "id": "externalId"})["token"]
    leads: list[Any] = [{"name": f"客户{i}", "tel": f"139{i:08d}", "id": f"c-{i}"} for i in range(2000)]
    leads[5]["tel"] = "不是电话"
    leads[7] = "not an object"
    leads[9] = {"name": "重复提交", "tel": "13900000008", "id": "c-8"}  # the same lead as item 8
    started = time.monotonic()
    answer = ok(send(api, token, {"leads": leads}))
    took = time.monotonic() - started
    assert (answer["total"], answer["created"], answer["failed"], answer["duplicates"]) == (2000, 1997, 2, 1)
    items = answer["items"]
    assert [i["index"] for i in items] == list(range(2000))
    assert items[5]["ok"] is False and items[5]["errors"][0]["field"] == "phone"
    assert items[7]["ok"] is False and items[7]["errors"][0]["field"] == "body"
    assert items[9]["duplicate"] == "external_id" and items[9]["customerId"] == items[8]["customerId"]
    assert len({i["customerId"] for i in items if i["created"]}) == 1997
    assert ok(api.client(team.admin).get("/api/customers", params={"source": SOURCE}))["total"] == 1997
    print(f"2,000 leads in one request: {took:.2f} s")

    # The same burst again: nothing new, every valid item answered with its lead.
    again = ok(send(api, token, {"leads": leads}))
    assert (again["created"], again["duplicates"], again["failed"]) == (0, 1998, 2)
    assert [i["customerId"] for i in again["items"]] == [i["customerId"] for i in items]


def test_duplicates_inside_one_burst_follow_the_policy(api, team):
    merge = new_source(api, team.admin)["token"]
    answer = ok(
        send(api, merge, {"leads": [{"name": "甲", "phone": "13800000001"}, {"name": "乙", "phone": "13800000001"}]})
    )
    first, second = answer["items"]
    assert first["created"] and second["merged"] and second["customerId"] == first["customerId"]
    assert "乙" in lead_of(api, team.admin, first["customerId"])["note"]

    flag = new_source(api, team.admin, key="百度", duplicatePolicy="flag")["token"]
    answer = ok(send(api, flag, {"leads": [{"phone": "13800000009"}, {"phone": "13800000009"}]}))
    first, second = answer["items"]
    assert first["created"] and second["created"] and second["duplicateOf"] == first["customerId"]


def test_burst_limits(api, team):
    token = new_source(api, team.admin)["token"]
    refused(send(api, token, {"leads": []}), 422, "batch_empty")
    refused(send(api, token, {"leads": {"a": 1}}), 422, "validation_error")
    body = refused(send(api, token, {"leads": [{"name": "x"}, 3]}), 422, "inbound_nothing_valid")
    assert body["data"]["failed"] == 2
    settings = api.ctx.settings
    limit = settings.max_inbound_batch
    settings.max_inbound_batch = 3
    try:
        refused(send(api, token, {"leads": [{"phone": f"1380000000{i}"} for i in range(4)]}), 422, "batch_too_large")
    finally:
        settings.max_inbound_batch = limit
    assert ok(api.client(team.admin).get("/api/customers"))["total"] == 0


def test_concurrent_repeats_of_one_lead_create_it_once(api, team):
    token = new_source(api, team.admin)["token"]
    clients = [api.client(token) for _ in range(8)]
    body = {"name": "张三", "phone": "13800138000", "externalId": "same-1"}
    answers = at_once([lambda c=c: c.post("/api/leads/inbound", json=body) for c in clients])
    assert sorted(r.status_code for r in answers) == [200] * 7 + [201], [r.text for r in answers]
    ids = {r.json()["data"]["customerId"] for r in answers}
    assert len(ids) == 1
    assert ok(api.client(team.admin).get("/api/customers"))["total"] == 1


def test_concurrent_bursts_sharing_external_ids_never_save_one_twice(api, team):
    token = new_source(api, team.admin)["token"]
    burst = {"leads": [{"phone": f"1380000{i:04d}", "externalId": f"e-{i}"} for i in range(200)]}
    answers = at_once([lambda: send(api, token, burst) for _ in range(4)])
    assert all(r.status_code == 200 for r in answers), [r.text[:300] for r in answers]
    assert sum(r.json()["data"]["created"] for r in answers) == 200
    by_index = [{r.json()["data"]["items"][i]["customerId"] for r in answers} for i in range(200)]
    assert all(len(ids) == 1 for ids in by_index)
    assert ok(api.client(team.admin).get("/api/customers"))["total"] == 200


# --- the signed form webhook ------------------------------------------------------------------------------------


def test_a_signed_form_submission_comes_in_and_its_replay_answers_the_same_lead(api, team):
    created = new_source(api, team.admin, fieldMapping={"手机": "phone", "姓名": "name"})
    secret = created["signingSecret"]
    body = json.dumps({"姓名": "王五", "手机": "13700137000", "留言": "周末有空"}, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json", **signed(secret, body, now_ts(api))}
    c = api.client()
    item = ok(c.post(form_url(), content=body, headers=headers), 201)
    lead = lead_of(api, team.admin, item["customerId"])
    assert (lead["name"], lead["phone"]) == ("王五", "13700137000") and "留言：周末有空" in lead["note"]

    replay = ok(c.post(form_url(), content=body, headers=headers), 200)
    assert replay["duplicate"] == "external_id" and replay["customerId"] == item["customerId"]
    assert ok(api.client(team.admin).get("/api/customers"))["total"] == 1


def test_a_form_submission_with_a_wrong_missing_or_old_signature_is_refused(api, team):
    created = new_source(api, team.admin)
    secret = created["signingSecret"]
    body = b'{"phone": "13700137000"}'
    c = api.client()
    json_type = {"Content-Type": "application/json"}
    refused(c.post(form_url(), content=body, headers=json_type), 401, "bad_signature")
    wrong = signed("lpsig_wrong", body, now_ts(api))
    refused(c.post(form_url(), content=body, headers={**json_type, **wrong}), 401, "bad_signature")
    tampered = signed(secret, body, now_ts(api))
    refused(
        c.post(form_url(), content=b'{"phone": "13700137001"}', headers={**json_type, **tampered}), 401, "bad_signature"
    )
    old = signed(secret, body, now_ts(api) - 301)
    refused(c.post(form_url(), content=body, headers={**json_type, **old}), 401, "stale_timestamp")
    future = signed(secret, body, now_ts(api) + 301)
    refused(c.post(form_url(), content=body, headers={**json_type, **future}), 401, "stale_timestamp")
    good = signed(secret, body, now_ts(api))
    refused(c.post(form_url("没有这个来源"), content=body, headers={**json_type, **good}), 404, "source_not_found")
    # The user's token is no substitute for a signature.
    refused(api.client(team.admin).post(form_url(), content=body, headers=json_type), 401, "bad_signature")

    ok(api.client(team.admin).patch(f"/api/lead-sources/{created['source']['id']}", json={"enabled": False}))
    refused(c.post(form_url(), content=body, headers={**json_type, **good}), 403, "source_disabled")
    assert ok(api.client(team.admin).get("/api/customers"))["total"] == 0


def test_a_urlencoded_form_submission_is_read_like_json(api, team):
    created = new_source(api, team.admin, fieldMapping={"tel": "phone", "uname": "name", "tid": "externalId"})
    body = urlencode({"uname": "赵六", "tel": "13600136000", "tid": "f-9", "来源页": "/landing"}).encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        **signed(created["signingSecret"], body, now_ts(api)),
    }
    item = ok(api.client().post(form_url(), content=body, headers=headers), 201)
    lead = lead_of(api, team.admin, item["customerId"])
    assert (lead["name"], lead["phone"], lead["externalId"]) == ("赵六", "13600136000", "f-9")
    assert "来源页：/landing" in lead["note"]


def test_a_burst_may_be_larger_than_other_bodies_but_a_form_submission_may_not(api, team):
    created = new_source(api, team.admin)
    big = {"phone": "13800138000", "note": "长" * 1_200_000}  # ~3.6 MB of UTF-8: over the JSON API's 2 MB
    body = refused(send(api, created["token"], big), 422, "validation_error")
    assert body["data"][0]["field"] == "note"
    raw = json.dumps(big).encode()
    headers = {"Content-Type": "application/json", **signed(created["signingSecret"], raw, now_ts(api))}
    refused(api.client().post(form_url(), content=raw, headers=headers), 413, "payload_too_large")


def test_concurrent_repeats_of_a_merged_submission_merge_and_notify_once(api, team):
    token = new_source(api, team.admin)["token"]
    existing = api.lead(team.manager, name="张三", phone="13800138000", assignedTo=team.alice.id)
    clients = [api.client(token) for _ in range(6)]
    body = {"name": "张先生", "phone": "13800138000", "note": "再问一次价格", "externalId": "again-1"}
    answers = at_once([lambda c=c: c.post("/api/leads/inbound", json=body) for c in clients])
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    data = [r.json()["data"] for r in answers]
    assert {d["customerId"] for d in data} == {existing["id"]} and all(d["merged"] for d in data)
    assert sorted(d["duplicate"] for d in data) == ["external_id"] * 5 + ["phone"]
    assert len([n for n in notifications(api, team.alice) if n["type"] == "lead_duplicate"]) == 1
    assert lead_of(api, team.alice, existing["id"])["note"].count("再问一次价格") == 1
