"""What a digest looks like on the phone: one WeChat subscribe message ("您有 5 条新线索", the digest page)
and one WeCom card (a line per notice, including what WeCom pacing deferred and what that carried)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from leadpush.config import Settings
from leadpush.notify.channels.base import DeliveryJob, FoldedNote, Recipient
from leadpush.wechat.format import subscribe_page, template_data, template_fields
from leadpush.wecom.card import carried, digest_card
from leadpush.wecom.pacing import Folded

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
SETTINGS = Settings(database_url="sqlite://", public_url="https://crm.example.com")


def lead(i: int, source: str = "抖音广告") -> dict[str, Any]:
    return {"customerId": i, "customerName": f"客户{i}", "customerPhone": f"1380013800{i}", "source": source}


def note(i: int, kind: str = "customer_assigned", payload: dict[str, Any] | None = None, title: str = "") -> FoldedNote:
    return FoldedNote(
        notification_id=i,
        kind=kind,
        title=title or f"您有一条新线索：客户{i}",
        body="",
        payload=payload if payload is not None else lead(i),
        created_at=T0 + timedelta(seconds=i),
    )


def job(folded: tuple[FoldedNote, ...]) -> DeliveryJob:
    return DeliveryJob(
        delivery_id=1,
        channel="wechat",
        attempts=1,
        lease_until=T0 + timedelta(minutes=1),
        notification_id=1,
        prev_id=None,
        kind="customer_assigned",
        title="您有一条新线索：客户1",
        body="",
        payload=lead(1),
        created_at=T0,
        recipient=Recipient(1, "李丽", "o-alice", "alice"),
        folded=folded,
    )


def wechat_data(j: DeliveryJob) -> dict[str, dict[str, str]]:
    fields = template_fields(j.kind, j.payload, j.title, j.body, j.folded)
    return template_data(fields, SETTINGS.wechat_field_map, SETTINGS.tz, False, j.created_at)


def test_new_leads_read_as_a_count_of_leads_with_a_batch_counted_by_its_leads() -> None:
    batch = note(3, "customers_assigned", {"count": 3, "customers": [lead(5, "百度"), lead(6), lead(7)]}, "3条")
    data = wechat_data(job((note(2), batch)))
    assert data == {
        "thing1": {"value": "您有 5 条新线索"},
        "phone_number2": {"value": "13800138001"},
        "thing3": {"value": "抖音广告、百度"},
        "time4": {"value": "2026-12-01 10:00"},
    }


def test_mixed_notices_read_as_a_count_of_notices() -> None:
    warning = note(2, "transfer_warning", {"customerId": 9, "customerName": "客户9"}, "线索即将流转：客户9")
    data = wechat_data(job((warning,)))
    assert data["thing1"] == {"value": "您有 2 条新通知"}


def test_a_digest_opens_the_digest_page() -> None:
    j = job((note(2),))
    fields = template_fields(j.kind, j.payload, j.title, j.body, j.folded)
    assert subscribe_page(j.kind, fields, "pages/customer/detail?id={customerId}", "pages/inbox", True) == "pages/inbox"
    plain = template_fields(j.kind, j.payload, j.title, j.body)
    assert subscribe_page(j.kind, plain, "pages/customer/detail?id={customerId}", "pages/inbox") == (
        "pages/customer/detail?id=1"
    )


def test_one_wecom_card_for_what_is_carried_and_what_pacing_deferred() -> None:
    j = job((note(2),))
    deferred = Folded(5, 1, "customer_assigned", "您有一条新线索：客户5", lead(5), notes=(note(6), note(7)))
    card = digest_card(SETTINGS, j, carried(j, [deferred]))
    assert card["title"] == "您有 5 条新线索"
    assert card["description"].splitlines() == [f"· 您有一条新线索：客户{i}" for i in (1, 2, 5, 6, 7)]
    assert card["url"] == f"https://crm.example.com/console/customers?notice={j.notification_id}"
