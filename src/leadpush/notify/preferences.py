"""A person's notification preferences: which push channels per category, and quiet hours (stored here,
applied elsewhere).

Channels are applied when deliveries are planned (`ledger.write_notifications` loads the fresh recipients'
choices in one query with `choices_of`, `chosen_for` turns one into what `policy.plan_deliveries` takes)
and when a delivery falls back at send time (`chain_for`). Quiet hours are only stored and checked here;
the claim-time rules (`notify.digest`, `notify.quiet`) read the same rows.

Only the channels the admin lets people choose for a category (LEADPUSH_PREFERENCE_CHANNELS) are the
person's: the others follow the deployment's policy (LEADPUSH_CHANNEL_POLICY) whatever is stored, so
narrowing what people may choose later never leaves a stale choice in force.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from leadpush import rulecache
from leadpush.config import Settings
from leadpush.errors import ApiError
from leadpush.notify.models import NotificationPreference, TeamNotificationDefault
from leadpush.notify.policy import (
    CATEGORIES,
    CATEGORY_NAMES,
    NAMES,
    PERSONAL_CHANNELS,
    Chain,
    category_of,
    chosen_chains,
)

HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
QUIET_MODES = ("team", "none", "custom", "working_hours")
TEAM_QUIET_MODES = ("none", "custom", "working_hours")
Choices = Mapping[str, list[str]]


def allowed_channels(settings: Settings, category: str) -> tuple[str, ...]:
    """The personal channels people may choose for `category` (LEADPUSH_PREFERENCE_CHANNELS; unset = all)."""
    allowed = settings.preference_channels
    if allowed is None or category not in allowed:
        return PERSONAL_CHANNELS
    return tuple(c for c in PERSONAL_CHANNELS if c in allowed[category])


def policy_personal(settings: Settings, kind: str) -> set[str]:
    """The personal channels the deployment's policy uses for `kind`."""
    return {c for chain in settings.channel_policy.chains_for(kind) for c in chain if c in PERSONAL_CHANNELS}


def chosen_for(settings: Settings, choices: Choices | None, kind: str) -> list[str] | None:
    """What `plan_deliveries` takes as `chosen` for a person with these stored choices; None = the policy.

    Within the channels the admin allows for the kind's category, the person's stored choice; outside them,
    whatever the policy does for the kind.
    """
    stored = (choices or {}).get(category_of(kind))
    if stored is None:
        return None
    allowed = allowed_channels(settings, category_of(kind))
    by_policy = policy_personal(settings, kind)
    return [c for c in PERSONAL_CHANNELS if (c in stored if c in allowed else c in by_policy)]


def choices_of(session: Session, user_ids: Collection[int]) -> dict[int, Choices]:
    """The channel choices of these people (people without any are left out), as this process's copy has them:
    one query for those it does not hold (see leadpush.rulecache). Read-only."""
    if not user_ids:
        return {}
    found = rulecache.cached_many(session, "choices", set(user_ids), lambda ids: stored_choices(session, ids))
    return {uid: channels for uid, channels in found.items() if channels}


def stored_choices(session: Session, user_ids: Collection[int]) -> dict[int, Choices]:
    """The stored channel choices of these people, in one query (people without any are left out)."""
    if not user_ids:
        return {}
    rows = session.execute(
        select(NotificationPreference.user_id, NotificationPreference.channels).where(
            NotificationPreference.user_id.in_(list(user_ids))
        )
    )
    return {uid: channels for uid, channels in rows if channels}


def chain_for(settings: Settings, session: Session, kind: str, channel: str, recipient_id: int) -> Chain:
    """The chain `channel` is in for this kind as the recipient's choice shapes it (send-time fallback)."""
    return chain_with(settings, choices_of(session, [recipient_id]).get(recipient_id), kind, channel)


def chain_with(settings: Settings, choices: Choices | None, kind: str, channel: str) -> Chain:
    """`chain_for` with the recipient's choices in hand (a claim reads them for all its recipients at once)."""
    chains = chosen_chains(settings.channel_policy.chains_for(kind), chosen_for(settings, choices, kind))
    for chain in chains:
        if channel in chain:
            return chain
    return (channel,)


def effective_channels(settings: Settings, choices: Choices | None, category: str) -> list[str]:
    """The personal channels the kinds of `category` reach a person on (before addresses are looked at)."""
    used: set[str] = set()
    for kind in CATEGORIES[category]:
        chains = chosen_chains(settings.channel_policy.chains_for(kind), chosen_for(settings, choices, kind))
        used.update(c for chain in chains for c in chain if c in PERSONAL_CHANNELS)
    return [c for c in PERSONAL_CHANNELS if c in used]


# --- reading and changing the stored settings ------------------------------------------------------------------


@dataclass(frozen=True)
class QuietHours:
    mode: str
    start: str | None
    end: str | None


def check_time(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    if not HHMM.match(value):
        raise ApiError(422, "invalid_time", f"{field}必须是 HH:MM 格式的时间（如 22:00）")
    return value


def check_quiet(quiet: QuietHours) -> QuietHours:
    """Refuse a custom period without both ends, or one that starts where it ends."""
    check_time(quiet.start, "免打扰开始时间")
    check_time(quiet.end, "免打扰结束时间")
    if quiet.mode == "custom" and (quiet.start is None or quiet.end is None):
        raise ApiError(422, "quiet_hours_incomplete", "自定义免打扰时段需要同时填写开始和结束时间")
    if quiet.start is not None and quiet.start == quiet.end:
        raise ApiError(422, "quiet_hours_empty", "免打扰的开始时间和结束时间不能相同")
    return quiet


def check_choices(settings: Settings, changes: Mapping[str, list[str] | None]) -> None:
    """Refuse turning on a channel the admin does not let people choose for that category (422)."""
    for category, channels in changes.items():
        if channels is None:
            continue
        allowed = allowed_channels(settings, category)
        for channel in channels:
            if channel not in allowed:
                raise ApiError(
                    422,
                    "channel_not_allowed",
                    f"管理员未开放为「{CATEGORY_NAMES[category]}」选择{NAMES[channel]}",
                    {"category": category, "channel": channel},
                )


def preference_of(session: Session, user_id: int) -> NotificationPreference | None:
    return session.get(NotificationPreference, user_id)


def update_preference(
    session: Session,
    settings: Settings,
    user_id: int,
    *,
    channels: Mapping[str, list[str] | None] | None,
    quiet: Mapping[str, str | None],
    urgent_override: bool | None,
    now: datetime,
) -> NotificationPreference:
    """Change what is given: `channels` per category (None for a category = back to the default), quiet hours
    (`mode`, `start`, `end` as given), `urgent_override`. Validated against the result, not the request."""
    row = session.get(NotificationPreference, user_id)
    if row is None:
        row = NotificationPreference(user_id=user_id, channels=None, quiet_mode="team", urgent_override=True)
        session.add(row)
    if channels:
        check_choices(settings, channels)
        merged = dict(row.channels or {})
        for category, chosen in channels.items():
            if chosen is None:
                merged.pop(category, None)
            else:
                merged[category] = [c for c in PERSONAL_CHANNELS if c in chosen]
        row.channels = merged or None
    result = check_quiet(
        QuietHours(
            quiet.get("mode", row.quiet_mode) or "team",
            quiet["start"] if "start" in quiet else row.quiet_start,
            quiet["end"] if "end" in quiet else row.quiet_end,
        )
    )
    row.quiet_mode, row.quiet_start, row.quiet_end = result.mode, result.start, result.end
    if urgent_override is not None:
        row.urgent_override = urgent_override
    row.updated_at = now
    session.flush()
    return row


def team_default_of(session: Session, team_id: int) -> TeamNotificationDefault | None:
    return session.get(TeamNotificationDefault, team_id)


def update_team_default(
    session: Session, team_id: int, quiet: Mapping[str, str | None], now: datetime
) -> TeamNotificationDefault:
    row = session.get(TeamNotificationDefault, team_id)
    if row is None:
        row = TeamNotificationDefault(team_id=team_id, quiet_mode="none")
        session.add(row)
    result = check_quiet(
        QuietHours(
            quiet.get("mode", row.quiet_mode) or "none",
            quiet["start"] if "start" in quiet else row.quiet_start,
            quiet["end"] if "end" in quiet else row.quiet_end,
        )
    )
    row.quiet_mode, row.quiet_start, row.quiet_end = result.mode, result.start, result.end
    row.updated_at = now
    session.flush()
    return row


def categories_in_order() -> Iterable[str]:
    return CATEGORIES.keys()
