"""`notificationData` in assignment responses, kept for front ends written for the old system.

The old system returned what the page should send to WeChat. leadpush sends it itself; the object
stays so old pages keep working (and can ignore it). `sentByServer` says whether the server will push
this notification to the recipient's phone (WeChat or WeCom); when false, nobody will unless the page does.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from leadpush.context import AppContext
from leadpush.notify.models import Delivery, Notification
from leadpush.users.models import User
from leadpush.wechat.format import ValueRefused, subscribe_page, template_data, template_fields

# Channels that reach a phone from the server, as the old page's own WeChat send did.
PUSH_CHANNELS = ("wechat", "wecom")


def _pushed(session: Session, notes: list[Notification]) -> set[int]:
    """Notifications the ledger planned a WeChat or WeCom send for (the deliveries written with them)."""
    if not notes:
        return set()
    return set(
        session.scalars(
            select(Delivery.notification_id).where(
                Delivery.notification_id.in_([n.id for n in notes]),
                Delivery.channel.in_(PUSH_CHANNELS),
                Delivery.status == "pending",
            )
        )
    )


def notification_data(ctx: AppContext, session: Session, notes: list[Notification]) -> list[dict[str, Any]]:
    s = ctx.settings
    notes = [n for n in notes if n.kind in ("customer_assigned", "customers_assigned")]
    pushed = _pushed(session, notes)
    out: list[dict[str, Any]] = []
    for note in notes:
        recipient = session.get(User, note.recipient_id)
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
                "sentByServer": note.id in pushed,
            }
        )
    return out
