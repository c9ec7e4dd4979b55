"""WeChat's daily API quota (45009), remembered by every worker until it resets at the local midnight.

Once WeChat answers 45009, every further send that day would get the same answer: a marker row in the
shared `kv` table (expiring at the next local midnight, LEADPUSH_TIMEZONE) tells all workers and processes
not to call WeChat until then. A delivery that meets the marker gives way to its chain's next channel
(WeCom) or waits, as one answered 45009 would, without spending a call.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from leadpush.db import Database
from leadpush.notify.models import KeyValue


def marker_key(appid: str) -> str:
    return f"wechat-quota:{appid}"[:100]


def quota_resets_at(now: datetime, tz: tzinfo) -> datetime:
    """The next local midnight after `now` (when WeChat's daily quota starts afresh)."""
    local = now.astimezone(tz)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=tz)
    return midnight


def exhausted_until(db: Database, appid: str, now: datetime) -> datetime | None:
    """When the quota marked exhausted resets, or None if it is not marked (or the mark has expired)."""
    with db.read() as session:
        return session.scalar(
            select(KeyValue.expires_at).where(KeyValue.key == marker_key(appid), KeyValue.expires_at > now)
        )


def mark_exhausted(db: Database, appid: str, now: datetime, tz: tzinfo) -> datetime:
    """Remember until the next local midnight that today's quota is used up; returns that moment."""
    until = quota_resets_at(now, tz)
    key = marker_key(appid)
    try:
        with db.write() as session:
            row = session.get(KeyValue, key)
            if row is None:
                session.add(KeyValue(key=key, value=f"45009 at {now.isoformat()}", expires_at=until))
            else:
                row.value = f"45009 at {now.isoformat()}"
                row.expires_at = until
    except IntegrityError:
        pass  # another worker marked it at the same moment
    return until
