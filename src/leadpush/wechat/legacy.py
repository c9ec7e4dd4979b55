"""`notificationData` in assignment responses, kept for front ends written for the old system.

The old system returned what the page should send to WeChat. leadpush sends it itself; the object
stays so old pages keep working (and can ignore it). `sentByServer` says whether the server will push
this notification to the recipient's phone (WeChat or WeCom); when false, nobody will unless the page does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from leadpush.context import AppContext
from leadpush.notify.ledger import planned_deliveries
from leadpush.notify.models import Notification
from leadpush.users.models import User
from leadpush.wechat.format import ValueRefused, subscribe_page, template_data, template_fields

# Channels that reach a phone from the server, as the old page's own WeChat send did.
PUSH_CHANNELS = ("wechat", "wecom")


def _pushed(note: Notification) -> bool:
    """The ledger planned a WeChat or WeCom send for this notification (the deliveries written with it)."""
    planned = planned_deliveries(note) or []
    return any(d.channel in PUSH_CHANNELS and d.status == "pending" for d in planned)


def notification_data(ctx: AppContext, notes: list[Notification], people: Iterable[User]) -> list[dict[str, Any]]:
    """`notificationData` for notifications this process has just written and committed (so they have their
    ids), from the objects in hand: the notifications, their recipients (`people`) and the deliveries the
    ledger wrote with them. No read."""
    s = ctx.settings
    notes = [n for n in notes if n.kind in ("customer_assigned", "customers_assigned")]
    recipients = {p.id: p for p in people}
    out: list[dict[str, Any]] = []
    for note in notes:
        recipient = recipients.get(note.recipient_id)
        fields = template_fields(note.kind, note.payload)
        try:
            data: dict[str, Any] | None = template_data(fields, s.wechat_field_map, s.tz, s.wechat_mask_phone)
        except ValueRefused:
            data = None  # e.g. a phone number too long for phone_number: nothing the page could send
        out.append(
            {
                "notificationId": note.id,
                "type": note.kind,
                "toUserId": note.recipient_id,
                "openid": recipient.wechat_openid if recipient else None,
                "templateId": s.wechat_template_id,
                "page": subscribe_page(note.kind, fields, s.wechat_page, s.wechat_digest_page),
                "data": data,
                "sentByServer": _pushed(note),
            }
        )
    return out
