"""Quiet hours: outside the hours a person may be disturbed, pushes (WeChat, WeCom) wait and go as one
message when the hours open; urgent notices (a first-contact reminder) still come unless the person turned
that off; in-app always arrives at once. The pure rule first, then a running leadpush against the fake
WeCom over real HTTP, SQLite and PostgreSQL, on the injectable clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from support import DATABASES, Api, Person, ok, wait_for
from support.channels import FakeWeChatServer, leadpush_against
from support.servers import ServerThread

from leadpush.context import AppContext
from leadpush.notify.models import Delivery, NotificationPreference, TeamNotificationDefault
from leadpush.notify.quiet import quiet_now
from leadpush.teams.models import Team

SHANGHAI = ZoneInfo("Asia/Shanghai")
OFFICE = {str(d): [["09:00", "12:00"], ["13:00", "18:00"]] for d in range(1, 6)}  # Monday to Friday


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=SHANGHAI)  # type: ignore[misc]


def rule(mode: str, start: str | None = None, end: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(quiet_mode=mode, quiet_start=start, quiet_end=end)


# 2026-12-01 is a Tuesday.
@pytest.mark.parametrize(
    ("person", "team", "hours", "now", "until", "reason"),
    [
        (rule("custom", "22:00", "08:00"), None, None, local(2026, 12, 1, 23, 0), local(2026, 12, 2, 8, 0), "08:00"),
        (rule("custom", "22:00", "08:00"), None, None, local(2026, 12, 2, 3, 0), local(2026, 12, 2, 8, 0), "08:00"),
        (rule("custom", "22:00", "08:00"), None, None, local(2026, 12, 1, 8, 0), None, None),
        (rule("custom", "22:00", "08:00"), None, None, local(2026, 12, 1, 21, 59), None, None),
        (rule("custom", "12:00", "14:00"), None, None, local(2026, 12, 1, 12, 30), local(2026, 12, 1, 14, 0), "14:00"),
        (rule("custom", "08:00", "08:00"), None, None, local(2026, 12, 1, 8, 0), None, None),  # empty range
        (rule("none"), rule("custom", "22:00", "08:00"), None, local(2026, 12, 1, 23, 0), None, None),
        (None, rule("custom", "21:00", "07:00"), None, local(2026, 12, 1, 23, 0), local(2026, 12, 2, 7, 0), "07:00"),
        (
            rule("team"),
            rule("custom", "21:00", "07:00"),
            None,
            local(2026, 12, 1, 6, 0),
            local(2026, 12, 1, 7, 0),
            "07:00",
        ),
        (rule("team"), None, None, local(2026, 12, 1, 23, 0), None, None),  # no team default: never quiet
        (rule("working_hours"), None, OFFICE, local(2026, 12, 1, 10, 0), None, None),
        (rule("working_hours"), None, OFFICE, local(2026, 12, 1, 12, 30), local(2026, 12, 1, 13, 0), "13:00"),
        (rule("working_hours"), None, OFFICE, local(2026, 12, 1, 20, 0), local(2026, 12, 2, 9, 0), "09:00"),
        (rule("working_hours"), None, OFFICE, local(2026, 12, 4, 18, 0), local(2026, 12, 7, 9, 0), "周一 09:00"),
        (rule("working_hours"), None, None, local(2026, 12, 1, 23, 0), None, None),  # no hours set: never quiet
        (rule("working_hours"), None, {}, local(2026, 12, 1, 23, 0), None, None),
        (None, rule("working_hours"), OFFICE, local(2026, 12, 6, 11, 0), local(2026, 12, 7, 9, 0), "09:00"),
    ],
)
def test_when_quiet_hours_end(person, team, hours, now, until, reason) -> None:
    quiet = quiet_now(person, team, hours, now.astimezone(UTC), SHANGHAI)
    if until is None:
        assert quiet is None
        return
    assert quiet is not None
    assert quiet.until == until and quiet.until.tzinfo is not None
    assert quiet.reason(SHANGHAI, now).endswith(f"，{reason} 后合并发送")


def test_the_reason_an_operator_reads() -> None:
    quiet = quiet_now(rule("custom", "22:00", "08:00"), None, None, local(2026, 12, 1, 23, 0), SHANGHAI)
    assert quiet is not None
    assert quiet.reason(SHANGHAI, local(2026, 12, 1, 23, 0)) == "免打扰时段（22:00–08:00），08:00 后合并发送"


# ---------------------------------------------------------------------------------------------------------
# A running leadpush against the fake WeCom
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=DATABASES)
def running(
    request: pytest.FixtureRequest, fake: FakeWeChatServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AppContext, ServerThread]]:
    """A leadpush with the default digest windows (test support turns them off)."""
    with leadpush_against(
        fake,
        request.param,
        str(tmp_path_factory.mktemp(request.param)),
        digest_window_wechat=30,
        digest_window_wecom=10,
        delivery_poll_interval=0.2,
    ) as stack:
        yield stack


@dataclass
class World:
    api: Api
    fake: FakeWeChatServer
    admin: Person
    manager: Person
    dave: Person  # WeCom

    def at(self, when: datetime) -> None:
        """Set the clock and wake the dispatcher, as a new commit would."""
        self.api.ctx.clock.set(when.astimezone(UTC))
        self.api.ctx.signals.notifications_committed(set())

    def assign(self, name: str, source: str = "抖音广告") -> int:
        lead = self.api.lead(self.manager, name=name, source=source)["id"]
        r = self.api.client(self.manager).patch(f"/api/customers/{lead}/assign", json={"assignedTo": self.dave.id})
        assert r.status_code == 200, r.text
        return lead

    def quiet(self, mode: str = "custom", start: str = "22:00", end: str = "08:00", urgent: bool = True) -> None:
        with self.api.ctx.db.write() as session:
            session.add(
                NotificationPreference(
                    user_id=self.dave.id, quiet_mode=mode, quiet_start=start, quiet_end=end, urgent_override=urgent
                )
            )

    def wecom(self) -> list[Delivery]:
        with self.api.ctx.db.read() as session:
            return list(session.scalars(select(Delivery).where(Delivery.channel == "wecom").order_by(Delivery.id)))

    def held(self, n: int) -> list[Delivery]:
        rows = wait_for(lambda: (r := [d for d in self.wecom() if d.hold_reason]) and len(r) == n and r)
        assert isinstance(rows, list)
        return rows

    def cards(self) -> list[dict]:
        return [m["body"]["textcard"] for m in self.fake.state.get_messages("wecom")]

    def in_app(self) -> list[str]:
        return [n["title"] for n in ok(self.api.client(self.dave).get("/api/notifications"))["items"]]

    def sla_rule(self) -> None:
        body = {"name": "电话线索", "sources": ["电话"], "remindAfterMinutes": 5}
        ok(self.api.client(self.admin).post("/api/sla-rules", json=body), 201)


@pytest.fixture
def world(pushing: Api, fake: FakeWeChatServer) -> World:
    api = pushing
    return World(
        api,
        fake,
        api.user("管理员", "admin", None),
        api.user("王经理", "manager", "A"),
        api.user("周杰", "sales", "A", wecom_userid="dave"),
    )


def test_notices_at_night_wait_and_go_as_one_card_at_eight(world: World) -> None:
    w = world
    w.quiet()
    w.at(local(2026, 12, 1, 23, 0))
    names = ["客户一", "客户二", "客户三"]
    for name in names:
        w.assign(name)
    # In-app at once; WeCom waits until the quiet hours end.
    assert wait_for(lambda: len(w.in_app()) == 3)
    for d in w.held(3):
        assert d.status == "pending" and d.attempts == 0
        assert d.hold_reason == "免打扰时段（22:00–08:00），08:00 后合并发送"
        assert d.next_attempt_at == local(2026, 12, 2, 8, 0)
    ledger = ok(w.api.client(w.admin).get("/api/deliveries", params={"channel": "wecom"}))["items"]
    assert {d["status"] for d in ledger} == {"pending"}
    assert w.cards() == []

    w.at(local(2026, 12, 2, 7, 59))
    w.assign("客户四")  # still quiet: waits with the others
    w.held(4)
    w.at(local(2026, 12, 2, 8, 0))
    [card] = wait_for(w.cards)
    assert card["title"] == "您有 4 条新线索"
    assert card["description"].splitlines() == [f"· 您有一条新线索：{n}" for n in [*names, "客户四"]]
    rows = wait_for(lambda: (r := w.wecom()) and all(d.status in ("sent", "merged") for d in r) and r)
    assert [d.status for d in rows] == ["sent", "merged", "merged", "merged"]
    assert rows[0].folds == [d.notification_id for d in rows[1:]]
    assert {d.merged_into for d in rows[1:]} == {rows[0].id}
    assert len(w.cards()) == 1


def test_a_first_contact_reminder_at_night_goes_at_once(world: World) -> None:
    w = world
    w.quiet()
    w.sla_rule()
    w.at(local(2026, 12, 3, 22, 55))
    w.assign("客户一", source="电话")
    w.held(1)
    w.at(local(2026, 12, 3, 23, 0))
    [card] = wait_for(w.cards)
    assert card["title"] == "请尽快联系线索「客户一」"
    assert len(w.held(1)) == 1  # the assignment itself still waits for the morning
    assert len(w.in_app()) == 2


def test_with_urgent_override_off_the_reminder_waits_too(world: World) -> None:
    w = world
    w.quiet(urgent=False)
    w.sla_rule()
    w.at(local(2026, 12, 5, 22, 55))
    w.assign("客户一", source="电话")
    w.held(1)
    w.at(local(2026, 12, 5, 23, 0))
    assert wait_for(lambda: len(w.in_app()) == 2)  # the reminder is there in-app at once
    reminder, _ = sorted(w.held(2), key=lambda d: d.notification_id, reverse=True)
    assert reminder.hold_reason == "免打扰时段（22:00–08:00），08:00 后合并发送"
    assert w.cards() == []

    w.at(local(2026, 12, 6, 8, 0))
    cards = wait_for(lambda: (c := w.cards()) and len(c) == 2 and c)
    # The reminder goes as itself (never folded: it must read as what it is), the assignment as its card.
    assert sorted(c["title"] for c in cards) == ["您有一条新线索：客户一", "请尽快联系线索「客户一」"]


def test_a_team_default_of_working_hours(world: World) -> None:
    w = world
    r = w.api.client(w.admin).put(f"/api/users/{w.dave.id}/availability", json={"workingHours": OFFICE})
    assert r.status_code == 200, r.text
    with w.api.ctx.db.write() as session:
        team = session.scalars(select(Team).where(Team.name == "A")).one()
        session.add(TeamNotificationDefault(team_id=team.id, quiet_mode="working_hours"))
    w.at(local(2026, 12, 8, 20, 0))  # a Tuesday evening
    w.assign("客户一")
    [d] = w.held(1)
    assert d.hold_reason == "免打扰时段（工作时间外），09:00 后合并发送"
    assert d.next_attempt_at == local(2026, 12, 9, 9, 0)
    w.at(local(2026, 12, 9, 9, 0))
    [card] = wait_for(w.cards)
    assert card["title"] == "您有一条新线索：客户一"
