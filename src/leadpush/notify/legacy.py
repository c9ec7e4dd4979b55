"""`notificationData` in assignment responses, kept for front ends written for the old system.

The old system returned what the page should send to WeChat. leadpush sends it itself; the object
stays so old pages keep working (and can ignore it).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from leadpush.context import AppContext
from leadpush.notify.models import Notification
from leadpush.notify.wechat_format import page_for, parse_field_map, template_data, template_fields
from leadpush.users.models import User


def notification_data(ctx: AppContext, session: Session, notes: list[Notification]) -> list[dict[str, Any]]:
    s = ctx.settings
    field_map = parse_field_map(s.wechat_field_map)
    out: list[dict[str, Any]] = []
    for note in notes:
        if note.kind not in ("customer_assigned", "customers_assigned"):
            continue
        recipient = session.get(User, note.recipient_id)
        fields = template_fields(note.kind, note.payload)
        out.append(
            {
                "notificationId": note.id,
                "type": note.kind,
                "toUserId": note.recipient_id,
                "openid": recipient.wechat_openid if recipient else None,
                "templateId": s.wechat_template_id,
                "page": page_for(s.wechat_page, fields),
                "data": template_data(fields, field_map, s.tz, s.wechat_mask_phone),
                "sentByServer": True,
            }
        )
    return out
