"""Delivery history: every try of a delivery is kept (when, what came of it, the platform's errcode) and
shown by GET /api/deliveries/{id}, under the same visibility as the ledger; held and merged deliveries say
why they wait and where they went."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from leadpush_fakes.wechat import SUBSCRIBE_PATH
from sqlalchemy import delete, select, update
from support import DATABASES, Api, running_stack, wait_for, wipe
from support.api import ok, refused
from support.channels import TEMPLATE, FakeWeChatServer
from support.receiver import WebhookReceiver

from leadpush.notify.channels.base import SendResult
from leadpush.notify.dispatcher import claim_due_deliveries, record_outcome
from leadpush.notify.ledger import INACTIVE
from leadpush.notify.models import Delivery, DeliveryAttempt
from leadpush.users.models import User
from leadpush.wechat.credits import add_credits

SECRET = "whsec-history-0123456789"


@pytest.fixture(params=DATABASES)
def hooked(request, tmp_path) -> Iterator[tuple[Api, WebhookReceiver]]:
    """A leadpush whose webhook channel points at a real receiver."""
    with (
        WebhookReceiver() as receiver,
        running_stack(
            request.param,
            str(tmp_path),
            webhook_url=receiver.url,
            webhook_secret=SECRET,
            delivery_max_attempts=3,
            delivery_poll_interval=0.2,
        ) as (ctx, server),
    ):
        wipe(ctx)
        api = Api(url=server.url, ctx=ctx)
        try:
            yield api, receiver
        finally:
            api.close()


def webhook_row(api: Api, who, status: str) -> dict | None:
    items = ok(api.client(who).get("/api/deliveries", params={"channel": "webhook", "status": status}))["items"]
    return items[0] if items else None


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_every_try_is_kept_oldest_first_with_its_outcome_and_the_status_after_it(hooked):
    api, receiver = hooked
    receiver.fail_with = [503, 500]
    admin = api.user("管理员", "admin", None)
    manager = api.user("王经理", "manager", "A")
    alice = api.user("李丽", "sales", "A")
    lead = api.lead(manager, name="张三")
    ok(api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": alice.id}))
    wait_for(lambda: webhook_row(api, admin, "failed"))
    api.nudge(seconds=3600)
    # Recorded before the clock moves on: an hour later its lease would have run out, and the answer of a
    # try whose claim was taken over is, rightly, not written (see the lost-claim test below).
    wait_for(lambda: (webhook_row(api, admin, "failed") or {}).get("attempts") == 2)
    api.nudge(seconds=3600)
    row = wait_for(lambda: webhook_row(api, admin, "sent"))

    detail = ok(api.client(admin).get(f"/api/deliveries/{row['id']}"))
    assert detail["delivery"]["id"] == row["id"] and detail["delivery"]["status"] == "sent"
    assert detail["delivery"]["attempts"] == 3
    tries = detail["attempts"]
    assert [(t["attempt"], t["outcome"], t["status"]) for t in tries] == [
        (1, "retry", "failed"),
        (2, "retry", "failed"),
        (3, "sent", "sent"),
    ]
    assert "503" in tries[0]["detail"] and "500" in tries[1]["detail"]
    assert all(t["errcode"] is None for t in tries)  # a webhook has no platform errcode
    assert all(t["worker"] for t in tries)  # the worker that sent it
    for t in tries:
        assert when(t["startedAt"]) <= when(t["finishedAt"])
    # Oldest first: each try began after the one before it ended (the clock moved an hour in between).
    assert when(tries[0]["finishedAt"]) < when(tries[1]["startedAt"]) < when(tries[2]["startedAt"])


def test_an_admins_retry_adds_to_the_history_instead_of_replacing_it(hooked):
    api, receiver = hooked
    receiver.fail_with = [400]
    admin = api.user("管理员", "admin", None)
    manager = api.user("王经理", "manager", "A")
    alice = api.user("李丽", "sales", "A")
    lead = api.lead(manager, name="张三")
    ok(api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": alice.id}))
    dead = wait_for(lambda: webhook_row(api, admin, "dead"))
    ok(api.client(admin).post(f"/api/deliveries/{dead['id']}/retry"))
    wait_for(lambda: webhook_row(api, admin, "sent"))
    tries = ok(api.client(admin).get(f"/api/deliveries/{dead['id']}"))["attempts"]
    assert [(t["outcome"], t["status"]) for t in tries] == [("permanent", "dead"), ("sent", "sent")]
    assert "400" in tries[0]["detail"]


def test_the_history_is_seen_as_the_ledger_is_admins_everyone_managers_their_team(api, team):
    lead = api.lead(team.manager, name="张三")
    ok(api.client(team.manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": team.bob.id}))
    [row] = wait_for(
        lambda: [d for d in ok(api.client(team.admin).get("/api/deliveries"))["items"] if d["status"] == "sent"]
    )
    assert row["channel"] == "inapp"
    # The list's rows carry the new fields too (nothing held, merged or folded here).
    assert row["holdReason"] is None and row["mergedInto"] is None and row["folds"] == []

    mine = ok(api.client(team.manager).get(f"/api/deliveries/{row['id']}"))
    assert mine["delivery"]["recipientName"] == "赵强"
    assert [(t["attempt"], t["outcome"], t["status"]) for t in mine["attempts"]] == [(1, "sent", "sent")]
    assert ok(api.client(team.admin).get(f"/api/deliveries/{row['id']}"))["attempts"] == mine["attempts"]

    # Another team's manager: as if it did not exist. A salesperson may not look at the ledger at all.
    refused(api.client(team.manager_b).get(f"/api/deliveries/{row['id']}"), 404, "delivery_not_found")
    refused(api.client(team.bob).get(f"/api/deliveries/{row['id']}"), 403, "forbidden")
    refused(api.client(team.admin).get("/api/deliveries/999999"), 404, "delivery_not_found")
    refused(api.client(team.admin).get(f"/api/deliveries/{2**31}"), 404, "delivery_not_found")


def test_held_and_merged_deliveries_say_why_they_wait_and_where_they_went(api, team):
    """The digest rules (notify/digest.py) hold and merge deliveries; the ledger shows what they wrote."""
    m = api.client(team.manager)
    leads = [api.lead(team.manager, name=name) for name in ("张三", "李四", "王五")]
    for lead in leads:
        ok(m.patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": team.bob.id}))
    wait_for(lambda: ok(api.client(team.admin).get("/api/deliveries", params={"status": "sent"}))["total"] == 3)
    later = api.ctx.clock.now() + timedelta(minutes=5)
    with api.ctx.db.write() as s:
        ids = sorted(s.scalars(select(Delivery.id).where(Delivery.status == "sent")))
        notes = {d.id: d.notification_id for d in s.scalars(select(Delivery))}
        s.execute(
            update(Delivery)
            .where(Delivery.id == ids[0])
            .values(status="pending", hold_reason="免打扰时段（22:00–08:00），08:00 发送", next_attempt_at=later)
        )
        s.execute(update(Delivery).where(Delivery.id == ids[1]).values(folds=[notes[ids[2]]]))
        s.execute(update(Delivery).where(Delivery.id == ids[2]).values(status="merged", merged_into=ids[1]))

    admin = api.client(team.admin)
    merged = ok(admin.get("/api/deliveries", params={"status": "merged"}))["items"]
    assert [(d["id"], d["status"], d["mergedInto"]) for d in merged] == [(ids[2], "merged", ids[1])]
    carrier = ok(admin.get(f"/api/deliveries/{ids[1]}"))["delivery"]
    assert carrier["folds"] == [notes[ids[2]]]
    held = ok(admin.get(f"/api/deliveries/{ids[0]}"))["delivery"]
    assert held["status"] == "pending" and held["holdReason"].startswith("免打扰时段")
    refused(admin.get("/api/deliveries", params={"status": "merging"}), 422, "invalid_filter")

    # OpenAPI lists every status, "merged" included, and the attempt fields.
    schemas = api.client().get("/openapi.json").json()["components"]["schemas"]
    assert "merged" in schemas["DeliveryOut"]["properties"]["status"]["enum"]
    assert set(schemas["DeliveryAttemptOut"]["properties"]) >= {
        "attempt",
        "startedAt",
        "finishedAt",
        "outcome",
        "status",
        "errcode",
        "detail",
        "worker",
    }


def assigned_and_set_aside(api: Api, team) -> datetime:
    """An assignment to bob whose in-app delivery is then made due tomorrow, with no history yet (so this
    stack's own worker leaves it alone and the test claims it itself); returns when it is due."""
    lead = api.lead(team.manager, name="张三")
    ok(api.client(team.manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": team.bob.id}))
    wait_for(lambda: ok(api.client(team.admin).get("/api/deliveries", params={"status": "sent"}))["total"] == 1)
    future = api.ctx.clock.now() + timedelta(days=1)
    with api.ctx.db.write() as s:
        s.execute(delete(DeliveryAttempt))
        s.execute(delete(Delivery).where(Delivery.status != "sent"))
        s.execute(update(Delivery).values(status="pending", next_attempt_at=future, lease_until=None, attempts=0))
    return future


def test_a_delivery_skipped_at_claim_for_a_deactivated_user_keeps_why(api, team):
    future = assigned_and_set_aside(api, team)
    with api.ctx.db.write() as s:
        s.execute(update(User).where(User.id == team.bob.id).values(active=False))
    assert claim_due_deliveries(api.ctx.db, future + timedelta(seconds=1), 60, 10, "w-claimer") == []
    with api.ctx.db.read() as s:
        rows = s.scalars(select(DeliveryAttempt)).all()
        delivery = s.scalars(select(Delivery)).one()
    assert delivery.status == "skipped"
    assert [(r.delivery_id, r.attempt, r.outcome, r.status, r.detail, r.worker) for r in rows] == [
        (delivery.id, 1, "skipped", "skipped", INACTIVE, "w-claimer")
    ]


def test_an_answer_that_lost_its_claim_is_not_written_into_the_history(api, team):
    """A worker whose claim was taken over (its heartbeat stopped, say) records nothing: only the new
    holder's try counts, and the history shows the gap (try 1 never came back)."""
    future = assigned_and_set_aside(api, team)
    t1 = future + timedelta(seconds=1)
    [first] = claim_due_deliveries(api.ctx.db, t1, 60, 10, "w-old")
    assert first.claimed_at == t1
    t2 = t1 + timedelta(seconds=5)
    [second] = claim_due_deliveries(api.ctx.db, t2, 60, 10, "w-new", dead_workers={"w-old"})
    assert record_outcome(api.ctx, first, SendResult.sent(), t2) == "lost"
    assert record_outcome(api.ctx, second, SendResult.sent(), t2 + timedelta(seconds=1)) == "sent"
    tries = ok(api.client(team.admin).get(f"/api/deliveries/{second.delivery_id}"))["attempts"]
    assert [(t["attempt"], t["outcome"], t["worker"]) for t in tries] == [(2, "sent", "w-new")]
    assert when(tries[0]["startedAt"]) == t2


# ---- the platform's errcode, per try ----------------------------------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeWeChatServer]:
    """The shared module fake (support.channels), here for the `pushing` stack."""
    from support.channels import strict_state

    with FakeWeChatServer(strict_state()) as server:
        yield server


def test_a_wechat_delivery_keeps_each_tries_errcode(pushing: Api, fake: FakeWeChatServer):
    api = pushing
    admin = api.user("管理员", "admin", None)
    manager = api.user("王经理", "manager", "A")
    alice = api.user("李丽", "sales", "A", wechat_openid="o-alice-history")
    with api.ctx.db.write() as s:
        add_credits(s, alice.id, [TEMPLATE] * 3, api.ctx.clock.now())
    fake.state.add_credits("o-alice-history", TEMPLATE, 3)
    fake.state.add_fault(SUBSCRIBE_PATH, "errcode", errcode=-1, count=1)
    lead = api.lead(manager, name="张三")
    ok(api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": alice.id}))

    def wechat(status: str) -> dict | None:
        items = ok(api.client(admin).get("/api/deliveries", params={"channel": "wechat", "status": status}))
        return items["items"][0] if items["items"] else None

    wait_for(lambda: wechat("failed"))
    api.ctx.clock.advance(seconds=3600)
    api.ctx.signals.notifications_committed(set())
    row = wait_for(lambda: wechat("sent"))
    tries = ok(api.client(admin).get(f"/api/deliveries/{row['id']}"))["attempts"]
    assert [(t["outcome"], t["errcode"]) for t in tries] == [("retry", -1), ("sent", 0)]
    assert "系统繁忙" in tries[0]["detail"]


@pytest.mark.slow  # 33 sends through the WeCom pacer
def test_wecom_deliveries_folded_by_the_pacer_keep_their_tries_too(pushing: Api, fake: FakeWeChatServer):
    """Past 30 a minute to one member, WeCom deliveries are deferred, then folded into one digest card by
    whichever gets the next slot (wecom/pacing.py): each keeps both tries, the folded ones included."""
    api = pushing
    admin = api.user("管理员", "admin", None)
    manager = api.user("王经理", "manager", "A")
    dave = api.user("戴维", "sales", "A", wecom_userid="Dave")
    m = api.client(manager)
    for _ in range(33):
        lead = api.lead(manager, name="张三")
        ok(m.patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": dave.id}))

    def wecom(status: str) -> list[dict]:
        params = {"channel": "wecom", "status": status, "pageSize": 100}
        return ok(api.client(admin).get("/api/deliveries", params=params))["items"]

    deferred = wait_for(lambda: (rows := wecom("failed")) and len(rows) == 3 and rows)
    api.ctx.clock.advance(seconds=61)
    fake.state.advance(61)  # WeCom's own minute passes too
    api.ctx.signals.notifications_committed(set())
    wait_for(lambda: len(wecom("sent")) == 33)
    histories = [ok(api.client(admin).get(f"/api/deliveries/{d['id']}"))["attempts"] for d in deferred]
    for tries in histories:
        assert [(t["attempt"], t["outcome"], t["status"]) for t in tries] == [
            (1, "retry", "failed"),
            (2, "sent", "sent"),
        ]
        assert "限速" in tries[0]["detail"] and tries[1]["errcode"] == 0 and tries[1]["worker"]
    # The one that got the slot carried the other two, whose second try says so.
    assert sorted(t[1]["detail"] or "" for t in histories)[-2:] == ["合并为一条摘要发送"] * 2
