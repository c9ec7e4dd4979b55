"""What the owner of a lead reads when its customer asks again through a lead source (kind `lead_duplicate`)."""

from __future__ import annotations

import uuid
from datetime import datetime

from leadpush.notify.ledger import NewNotification
from leadpush.users.models import User

KIND = "lead_duplicate"


def asked_again(
    recipient: User,
    *,
    customer_id: int,
    customer_name: str,
    customer_phone: str,
    source_key: str,
    source_name: str,
    times: int,
    when: datetime,
) -> NewNotification:
    """One notice per lead per inbound request, however many of its submissions the request merged."""
    again = f"再次咨询（{times} 次）" if times > 1 else "再次咨询"
    return NewNotification(
        recipient=recipient,
        kind=KIND,
        title=f"客户 {customer_name} {again}",
        body=f"客户「{customer_name}」通过「{source_name}」再次提交了信息，已合并到您的线索，请尽快联系",
        payload={
            "customerId": customer_id,
            "customerName": customer_name,
            "customerPhone": customer_phone,
            "source": source_key,
            "sourceName": source_name,
            "count": times,
            "inquiryTime": when.isoformat(timespec="seconds"),
        },
        # Each inbound request is its own event (a repeat of the same submission never gets here: it is
        # answered from its external id), and a rolled-back attempt wrote nothing to collide with.
        dedupe_key=f"{KIND}:{customer_id}:{uuid.uuid4().hex}",
        actor_id=None,
    )
