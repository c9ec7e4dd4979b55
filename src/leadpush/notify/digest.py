"""Quiet hours and time-window digests, decided at claim time: a push that would disturb (quiet hours) or
follow another too soon (a digest window) waits with a due time; when it comes due, everything waiting
for the same person and channel goes as one message, carried by one delivery (`folds`), the others
`merged` into it.

Only the push channels (WeChat, WeCom) wait or fold; in-app and the webhook never do. Two steps, both in
the claim's own transaction (dispatcher.claim_due_deliveries), each reading what it needs for the whole
batch in a few queries:

- `hold`: of the due push deliveries, those in the recipient's quiet hours (notify.quiet) wait until
  the hours end; an urgent kind (policy.URGENT_KINDS) still goes when the person's `urgent_override` is on.
  Those whose person got a push on the same channel within the channel's window (look-back:
  LEADPUSH_DIGEST_WINDOW_WECHAT / _WECOM, 0 = off) wait until that push + the window. Urgent kinds never
  wait for a window. A held delivery stays `pending`, not claimed, its attempts untouched, with
  `hold_reason` saying why and `next_attempt_at` when it is due.
- `fold`: a claimed push delivery carries every other waiting one of the same person and channel (due, or
  held by a window) as one message: its `folds` gets their notification ids, they become `merged` with
  `merged_into` = its id — final, never sent on their own; the carrier's outcome is theirs. Urgent kinds
  neither carry nor are folded: an SLA reminder is always read as itself. With a window of 0 only what
  waited out quiet hours folds (every notice on its own otherwise).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, or_, select, update
from sqlalchemy.orm import Session

from leadpush.config import Settings
from leadpush.notify.channels.base import FoldedNote
from leadpush.notify.expiry import skip_expired
from leadpush.notify.models import Delivery, Notification, NotificationPreference, TeamNotificationDefault
from leadpush.notify.policy import PERSONAL_CHANNELS, URGENT_KINDS
from leadpush.notify.quiet import Quiet, quiet_now
from leadpush.routing.models import UserAvailability
from leadpush.teams.models import Team
from leadpush.users.models import User

# The two kinds of hold, told apart by their reason's first words (the operator reads the whole reason).
QUIET_HOLD = "免打扰时段"
WINDOW_HOLD = "合并窗口"
PUSH_CHANNELS = PERSONAL_CHANNELS  # wechat, wecom


def windows(settings: Settings) -> dict[str, float]:
    """Each push channel's digest window in seconds (0 = off)."""
    return {"wechat": settings.digest_window_wechat, "wecom": settings.digest_window_wecom}


def window_reason(seconds: float) -> str:
    return f"{WINDOW_HOLD}：{seconds:g} 秒内的通知合并为一条"


@dataclass(frozen=True)
class PersonQuiet:
    quiet: Quiet | None
    urgent_override: bool


def quiet_of(session: Session, user_ids: Iterable[int], now: datetime, settings: Settings) -> dict[int, PersonQuiet]:
    """Each person's quiet hours now (their preference, their team's default, their working hours): one query."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(User.id, NotificationPreference, TeamNotificationDefault, UserAvailability.working_hours)
        .outerjoin(NotificationPreference, NotificationPreference.user_id == User.id)
        .outerjoin(Team, Team.name == User.team)
        .outerjoin(TeamNotificationDefault, TeamNotificationDefault.team_id == Team.id)
        .outerjoin(UserAvailability, UserAvailability.user_id == User.id)
        .where(User.id.in_(ids))
    ).all()
    out: dict[int, PersonQuiet] = {}
    for uid, pref, team_default, hours in rows:
        quiet = quiet_now(pref, team_default, hours, now, settings.tz)
        out[uid] = PersonQuiet(quiet, True if pref is None else bool(pref.urgent_override))
    return out


def last_pushes(
    session: Session, pairs: set[tuple[int, str]], now: datetime, window: dict[str, float]
) -> dict[tuple[int, str], datetime]:
    """The last push (sent, or being sent) to each (person, channel) within that channel's window."""
    since = {ch: now - timedelta(seconds=w) for ch, w in window.items() if w > 0}
    channels = sorted({ch for _, ch in pairs} & since.keys())
    if not channels:
        return {}
    recent = or_(
        *(
            or_(
                and_(Delivery.channel == ch, Delivery.status == "sent", Delivery.sent_at > t),
                and_(Delivery.channel == ch, Delivery.status == "sending", Delivery.updated_at > t),
            )
            for ch, t in since.items()
            if ch in channels
        )
    )
    rows = session.execute(
        select(Delivery.recipient_id, Delivery.channel, Delivery.status, Delivery.sent_at, Delivery.updated_at).where(
            Delivery.recipient_id.in_(sorted({uid for uid, _ in pairs})), Delivery.channel.in_(channels), recent
        )
    ).all()
    last: dict[tuple[int, str], datetime] = {}
    for uid, channel, status, sent_at, updated_at in rows:
        when, key = sent_at if status == "sent" else updated_at, (uid, channel)
        if when is not None and key in pairs and (key not in last or when > last[key]):
            last[key] = when
    return last


def hold(session: Session, ids: list[int], now: datetime, settings: Settings) -> list[int]:
    """Hold (pending, a later next_attempt_at, hold_reason) the deliveries among `ids` that must wait; the rest."""
    if not ids:
        return ids
    rows = session.execute(
        select(Delivery.id, Delivery.recipient_id, Delivery.channel, Notification.kind)
        .join(Notification, Notification.id == Delivery.notification_id)
        .where(
            Delivery.id.in_(ids),
            Delivery.channel.in_(PUSH_CHANNELS),
            # A `sending` one taken over from a dead worker was decided already (and may have gone out).
            Delivery.status.in_(("pending", "failed")),
        )
    ).all()
    if not rows:
        return ids
    tz = settings.tz
    people = quiet_of(session, {r.recipient_id for r in rows}, now, settings)
    held: dict[int, tuple[datetime, str]] = {}
    may_wait: list[Any] = []
    window = windows(settings)
    for r in rows:
        urgent = r.kind in URGENT_KINDS
        person = people.get(r.recipient_id)
        if person is not None and person.quiet is not None and not (urgent and person.urgent_override):
            held[r.id] = (person.quiet.until, person.quiet.reason(tz, now))
        elif not urgent and window.get(r.channel, 0) > 0:
            may_wait.append(r)
    if may_wait:
        last = last_pushes(session, {(r.recipient_id, r.channel) for r in may_wait}, now, window)
        for r in may_wait:
            when = last.get((r.recipient_id, r.channel))
            if when is not None:
                seconds = window[r.channel]
                held[r.id] = (when + timedelta(seconds=seconds), window_reason(seconds))
    if held:
        session.execute(
            update(Delivery),
            [
                {"id": i, "status": "pending", "next_attempt_at": until, "hold_reason": reason[:200], "updated_at": now}
                for i, (until, reason) in held.items()
            ],
        )
    return [i for i in ids if i not in held]


@dataclass
class _Row:
    id: int
    notification_id: int
    recipient_id: int
    channel: str
    status: str
    hold_reason: str | None
    folds: list[int] | None


def _push_rows() -> Select[int, int, int, str, str, str | None, list[int] | None]:
    """What folding reads of a delivery (a `_Row`): push channels, non-urgent kinds (never folded)."""
    return (
        select(
            Delivery.id,
            Delivery.notification_id,
            Delivery.recipient_id,
            Delivery.channel,
            Delivery.status,
            Delivery.hold_reason,
            Delivery.folds,
        )
        .join(Notification, Notification.id == Delivery.notification_id)
        .where(Delivery.channel.in_(PUSH_CHANNELS), Notification.kind.not_in(URGENT_KINDS))
    )


def _foldable(hold_reason: str | None, channel: str, window: dict[str, float]) -> bool:
    """May this (non-urgent) push travel in a digest? With the channel's window on, always; off, only what
    waited out quiet hours (so that the person gets one message when the hours open)."""
    return window.get(channel, 0) > 0 or (hold_reason or "").startswith(QUIET_HOLD)


def _carrier(group: Sequence[_Row]) -> _Row:
    """Who carries a person+channel's digest: one being sent again (it must go anyway), else one that
    carries already (a retried digest), else the oldest."""
    return min(group, key=lambda r: (r.status != "sending", not r.folds, r.notification_id))


def fold(session: Session, ids: list[int], now: datetime, settings: Settings, lock: bool) -> list[int]:
    """Fold the waiting push deliveries of each claimed one's person and channel into it; the ids still claimed.

    `lock`: take the folded rows with FOR UPDATE SKIP LOCKED (PostgreSQL: another worker's claim may be
    looking at them); a row another worker holds is left for it.
    """
    if not ids:
        return ids
    window = windows(settings)
    claimed = [
        _Row(*r)
        for r in session.execute(_push_rows().where(Delivery.id.in_(ids))).all()
        if _foldable(r.hold_reason, r.channel, window)
    ]
    if not claimed:
        return ids
    groups: dict[tuple[int, str], list[_Row]] = defaultdict(list)
    for row in claimed:
        groups[(row.recipient_id, row.channel)].append(row)
    carriers = {pair: _carrier(group) for pair, group in groups.items()}
    # In the batch: everything but the carrier and other rows being sent again (they may have gone out).
    merged: dict[int, list[_Row]] = defaultdict(list)
    for pair, group in groups.items():
        carrier = carriers[pair]
        merged[carrier.id].extend(r for r in group if r is not carrier and r.status != "sending")
    # Outside the batch: waiting rows of the same people and channels (due, or held by a window).
    query = (
        _push_rows()
        .where(
            Delivery.recipient_id.in_(sorted({uid for uid, _ in carriers})),
            Delivery.channel.in_(sorted({ch for _, ch in carriers})),
            Delivery.status.in_(("pending", "failed")),
            Delivery.id.not_in(ids),
            or_(Delivery.next_attempt_at <= now, Delivery.hold_reason.like(WINDOW_HOLD + "%")),
        )
        .order_by(Delivery.id)
    )
    if lock:
        query = query.with_for_update(skip_locked=True, of=Delivery)
    outside = [_Row(*r) for r in session.execute(query).all()]
    # They were not among the claim's rows: a notice that can no longer be true is skipped, not folded in.
    live = set(skip_expired(session, [r.id for r in outside], now))
    for row in outside:
        if row.id not in live:
            continue
        into = carriers.get((row.recipient_id, row.channel))
        if into is not None and _foldable(row.hold_reason, row.channel, window):
            merged[into.id].append(row)
    gone = {r.id for rows in merged.values() for r in rows}
    carrier_rows = {c.id: c for c in carriers.values()}
    updates = [
        {
            "id": r.id,
            "status": "merged",
            "merged_into": cid,
            "folds": None,
            "hold_reason": None,
            "lease_until": None,
            "updated_at": now,
        }
        for cid, rows in merged.items()
        for r in rows
    ]
    if updates:
        session.execute(update(Delivery), updates)
        # A row merged now that carried others before (a digest that failed and waits for its retry):
        # what it carried moves on with it, so every merged row points at the delivery that carries it.
        moved = {r.id: cid for cid, rows in merged.items() for r in rows if r.folds}
        for old_carrier, cid in moved.items():
            session.execute(
                update(Delivery)
                .where(Delivery.merged_into == old_carrier, Delivery.status == "merged")
                .values(merged_into=cid, updated_at=now)
                .execution_options(synchronize_session=False)
            )
        session.execute(
            update(Delivery),
            [
                {
                    "id": cid,
                    # A carrier may have carried before (a retry): what it carries only grows. A merged row's
                    # own folds (it carried once, then was merged) travel on with it.
                    "folds": sorted(
                        set(carrier_rows[cid].folds or [])
                        | {r.notification_id for r in rows}
                        | {n for r in rows for n in (r.folds or [])}
                    ),
                }
                for cid, rows in merged.items()
                if rows
            ],
        )
    return [i for i in ids if i not in gone]


def folded_notes(session: Session, folds: Iterable[int]) -> dict[int, FoldedNote]:
    """The notifications that digests carry (by id), read in one query, for the claimed jobs."""
    wanted = sorted(set(folds))
    if not wanted:
        return {}
    notes = session.scalars(select(Notification).where(Notification.id.in_(wanted)))
    return {
        n.id: FoldedNote(
            notification_id=n.id, kind=n.kind, title=n.title, body=n.body, payload=n.payload, created_at=n.created_at
        )
        for n in notes
    }
