"""What is decided when due deliveries are claimed, before anything is sent (design: "decided when a
delivery is planned or claimed, never by dropping rows").

In the claim's own transaction, over the due deliveries it picked: a time-sensitive notice that can no
longer be true is skipped (expiry.py); a push that falls in the recipient's quiet hours or inside a
digest window is held with a due time (digest.py). What is left is claimed and sent.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from leadpush.config import Settings
from leadpush.notify.digest import hold
from leadpush.notify.expiry import skip_expired


def decide(session: Session, ids: list[int], now: datetime, settings: Settings) -> list[int]:
    """The deliveries among `ids` to send now; the others were skipped or held in this transaction."""
    ids = skip_expired(session, ids, now)
    return hold(session, ids, now, settings)
