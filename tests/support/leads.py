"""Leads in and leads moved, and what the database recorded about them (owner, history, notifications,
one delivery row per channel). Shared by the assignment, lead, error and race tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from sqlalchemy import func, select

from leadpush.assignment.models import Assignment
from leadpush.leads.models import Customer
from leadpush.notify.models import Delivery, Notification
from support.api import ok

VIAS = ("web", "miniprogram", "batch", "public_pool")


def create_leads(base_url: str, token: str, n: int) -> list[int]:
    """`n` new leads in one request (the batch form of POST /api/customers); their ids."""
    r = httpx.post(
        f"{base_url}/api/customers",
        json=[{"name": f"客户{i}", "phone": f"1380000{i:04d}", "source": "官网"} for i in range(n)],
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    return [c["id"] for c in r.json()["data"]["customers"]]


def assign(api: Any, actor: Any, via: str, lead_ids: int | list[int], to: Any, **extra: Any) -> httpx.Response:
    """Assign through one of the four endpoints; `to` is a Person or a raw id."""
    to_id = getattr(to, "id", to)
    c = api.client(actor)
    if via in ("web", "miniprogram"):
        assert isinstance(lead_ids, int)
        path = f"/api/customers/{lead_ids}/assign" if via == "web" else f"/api/customers/miniprogram/{lead_ids}/assign"
        return c.patch(path, json={"assignedTo": to_id, **extra})
    ids = [lead_ids] if isinstance(lead_ids, int) else lead_ids
    path = "/api/customers/batch-assign" if via == "batch" else "/api/customers/public-pool/assign"
    return c.post(path, json={"customerIds": ids, "assignedTo": to_id, **extra})


def at_once(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Make the calls from as many threads, released together by a barrier."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], httpx.Response]) -> httpx.Response:
        barrier.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def warm(api: Any, person: Any) -> httpx.Client:
    """A client with its connection already open, so the race is decided by the server, not by TCP set-up."""
    c = api.client(person)
    ok(c.get("/api/me"))
    return c


def notes(api: Any, recipient: Any = None, kind: str | None = None) -> list[Notification]:
    with api.ctx.db.read() as s:
        q = select(Notification).order_by(Notification.id)
        if recipient is not None:
            q = q.where(Notification.recipient_id == getattr(recipient, "id", recipient))
        if kind is not None:
            q = q.where(Notification.kind == kind)
        return list(s.scalars(q))


def about(note: Notification) -> set[int]:
    """The lead ids a notification is about (one lead, or a digest's list)."""
    if "customerIds" in note.payload:
        return set(note.payload["customerIds"])
    return {note.payload["customerId"]}


def notes_about(api: Any, lead_id: int) -> list[Notification]:
    return [n for n in notes(api) if lead_id in about(n)]


def deliveries(api: Any, note: Notification | None = None) -> list[Delivery]:
    with api.ctx.db.read() as s:
        q = select(Delivery).order_by(Delivery.id)
        if note is not None:
            q = q.where(Delivery.notification_id == note.id)
        return list(s.scalars(q))


def history(api: Any, lead_id: int) -> list[Assignment]:
    with api.ctx.db.read() as s:
        return list(s.scalars(select(Assignment).where(Assignment.customer_id == lead_id).order_by(Assignment.id)))


def count(api: Any, model: Any) -> int:
    with api.ctx.db.read() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def customer(api: Any, lead_id: int) -> Customer:
    with api.ctx.db.read() as s:
        row = s.get(Customer, lead_id)
        assert row is not None
        return row


def expect_channels(api: Any, note: Notification, *, wechat: bool = False, wecom: bool = False) -> None:
    """The delivery rows written with a notification: one per channel, in-app always, and otherwise only channels
    the recipient has an address for (WeChat: an openid; WeCom: a WeCom user id). Which of those a kind uses is the
    channel policy's choice; a channel the deployment has not configured, when recorded, is recorded as skipped,
    so an operator sees why the person was not reached there."""
    settings = api.ctx.settings
    rows = deliveries(api, note)
    by_channel = {d.channel: d for d in rows}
    assert len(by_channel) == len(rows), "one row per channel"
    assert all(d.recipient_id == note.recipient_id for d in rows)
    assert "inapp" in by_channel and by_channel["inapp"].status != "skipped"
    webhook = {"webhook"} if settings.webhook_enabled else set()
    reachable = ({"wechat"} if wechat else set()) | ({"wecom"} if wecom else set())
    assert set(by_channel) <= {"inapp"} | reachable | webhook, by_channel
    if reachable:
        assert set(by_channel) & reachable, "someone with a phone channel gets a row for it (sent or why not)"
    else:
        assert set(by_channel) == {"inapp"} | webhook
    for channel, enabled in (("wechat", settings.wechat_enabled), ("wecom", settings.wecom_enabled)):
        if channel in by_channel and not enabled:
            assert by_channel[channel].status == "skipped" and by_channel[channel].policy, by_channel[channel].policy
