"""Quiet hours: whether a person may be disturbed on their phone now, and if not, when they may be (pure).

A person's `quiet_mode` (NotificationPreference) decides: `team` (the default: their team's default, none
when the team has none), `none`, `custom` (quiet_start to quiet_end, "HH:MM" in LEADPUSH_TIMEZONE; may
wrap midnight; start == end = never quiet) or `working_hours` (quiet outside the working hours set for
routing, routing.models.UserAvailability; none set = never quiet). Wall times are read in the deployment's
timezone; what comes back is an aware datetime in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

WEEKDAYS = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")


class PersonQuiet(Protocol):
    """A quiet-hours setting: a person's own (notify.models.NotificationPreference) or, with the same three
    fields, a team's default (TeamNotificationDefault)."""

    @property
    def quiet_mode(self) -> str: ...
    @property
    def quiet_start(self) -> str | None: ...
    @property
    def quiet_end(self) -> str | None: ...


TeamQuiet = PersonQuiet


WorkingHours = dict[str, list[list[str]]]


@dataclass(frozen=True)
class Quiet:
    """Now is quiet for the person until `until` (UTC); `window` says which hours, for the operator."""

    until: datetime
    window: str  # "22:00–08:00" or "工作时间外"

    def reason(self, tz: ZoneInfo, now: datetime) -> str:
        """The hold reason an operator reads: 免打扰时段（22:00–08:00），08:00 后合并发送."""
        return f"免打扰时段（{self.window}），{wall_time(self.until, tz, now)} 后合并发送"


def minutes(value: str | None) -> int | None:
    """ "HH:MM" as minutes since midnight (0..1440, "24:00" allowed); None if it is not one."""
    if not value or len(value) != 5 or value[2] != ":":
        return None
    hh, mm = value[:2], value[3:]
    if not (hh.isdigit() and mm.isdigit()):
        return None
    h, m = int(hh), int(mm)
    if m > 59 or h > 24 or (h == 24 and m):
        return None
    return h * 60 + m


def effective_rule(person: PersonQuiet | None, team: TeamQuiet | None) -> tuple[str, str | None, str | None]:
    """(mode, start, end) that applies: the person's own, or with mode `team` (or no row) the team's."""
    if person is not None and person.quiet_mode != "team":
        return person.quiet_mode, person.quiet_start, person.quiet_end
    if team is not None:
        return team.quiet_mode, team.quiet_start, team.quiet_end
    return "none", None, None


def _at(day: date, minute: int, tz: ZoneInfo) -> datetime:
    """The moment `minute` past local midnight of `day` (1440 = the next midnight), in UTC."""
    local = datetime.combine(day, time(0), tzinfo=tz) + timedelta(minutes=minute)
    # Rebuild from wall time so a DST change during the day lands on the wall clock, not on an elapsed span.
    wall = datetime(local.year, local.month, local.day, local.hour, local.minute, tzinfo=tz)
    return wall.astimezone(UTC)


def custom_quiet(start: str | None, end: str | None, now: datetime, tz: ZoneInfo) -> Quiet | None:
    """Quiet from `start` to `end` every day (wrapping midnight when start > end)."""
    s, e = minutes(start), minutes(end)
    if s is None or e is None or s == e:
        return None
    local = now.astimezone(tz)
    t = local.hour * 60 + local.minute
    if s < e:
        quiet = s <= t < e
        ends_on = local.date()
    else:
        quiet = t >= s or t < e
        ends_on = local.date() + timedelta(days=1) if t >= s else local.date()
    if not quiet:
        return None
    return Quiet(_at(ends_on, e, tz), f"{start}–{end}")


def _ranges(hours: WorkingHours, weekday: int) -> list[tuple[int, int]]:
    out = []
    for pair in hours.get(str(weekday)) or []:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            continue
        s, e = minutes(pair[0]), minutes(pair[1])
        if s is not None and e is not None and s < e:
            out.append((s, e))
    return sorted(out)


def working_hours_quiet(hours: WorkingHours | None, now: datetime, tz: ZoneInfo) -> Quiet | None:
    """Quiet outside the working hours (end exclusive, as routing reads them) until the next one starts.

    No working hours at all (no row, or not one valid range in the week) = never quiet: a person is not
    silenced for good by an empty form.
    """
    if not hours or not any(_ranges(hours, d) for d in range(1, 8)):
        return None
    local = now.astimezone(tz)
    t = local.hour * 60 + local.minute
    today = local.date()
    if any(s <= t < e for s, e in _ranges(hours, local.isoweekday())):
        return None
    for ahead in range(8):
        day = today + timedelta(days=ahead)
        for s, _e in _ranges(hours, day.isoweekday()):
            if ahead == 0 and s <= t:
                continue
            return Quiet(_at(day, s, tz), "工作时间外")
    return None  # unreachable: some weekday has a range, and it comes within a week


def quiet_now(
    person: PersonQuiet | None,
    team: TeamQuiet | None,
    working_hours: WorkingHours | None,
    now: datetime,
    tz: ZoneInfo,
) -> Quiet | None:
    """Whether `now` is quiet for a person, and until when; None = they may be disturbed now."""
    mode, start, end = effective_rule(person, team)
    if mode == "custom":
        return custom_quiet(start, end, now, tz)
    if mode == "working_hours":
        return working_hours_quiet(working_hours, now, tz)
    return None


def wall_time(when: datetime, tz: ZoneInfo, now: datetime) -> str:
    """When quiet hours end, as an operator reads it: "08:00" within a day, else "周一 09:00"."""
    local, today = when.astimezone(tz), now.astimezone(tz)
    hm, days = local.strftime("%H:%M"), (local.date() - today.date()).days
    if local - today < timedelta(hours=24) and days <= 1:
        return hm
    return f"{WEEKDAYS[local.weekday()]} {hm}" if days < 7 else local.strftime("%m-%d ") + hm
