"""kill -9 while WeCom cards are on the wire: WeCom took them, leadpush never heard back, and the restarted
process sends them again. With enable_duplicate_check (the default) every member sees each card once.

The fake WeCom handles each send at once and answers it late (a `late` fault), so the kill lands after
WeCom showed the cards and before leadpush recorded them: the mid-flight case of docs/reliability.md.
"""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest
from leadpush_fakes.wechat import WECOM_SEND_PATH
from sqlalchemy import func, select
from support.channels import FakeWeChatServer, channel_settings, strict_state
from support.procs import LeadpushProcess

from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.migrate import upgrade
from leadpush.notify.models import Delivery
from leadpush.users.service import create_user

pytestmark = pytest.mark.slow  # kill -9 of a `leadpush serve` process mid-send

MEMBERS = [f"member{i}" for i in range(4)]
CARDS = 20  # five per member: well inside WeCom's 30 a minute, so pacing folds nothing
LATE = 3.0  # WeCom answers each send this late (within LEADPUSH_SEND_TIMEOUT's 10 s)


def wecom_count(ctx: AppContext, status: str) -> int:
    query = select(func.count()).select_from(Delivery).where(Delivery.channel == "wecom", Delivery.status == status)
    with ctx.db.read() as s:
        return s.scalar(query) or 0


@pytest.mark.parametrize("check", [1800, 0], ids=["checked", "check-off"])
def test_cards_sent_again_after_a_kill_mid_flight_are_each_shown_once(tmp_path, check):
    """With the check off (LEADPUSH_WECOM_DUPLICATE_CHECK_SECONDS=0) the same kill shows the re-sent cards
    twice, within the documented bound (the dead process's concurrency)."""
    db_url = f"sqlite:///{tmp_path}/wecom-crash.db"
    upgrade(db_url)
    ctx = AppContext.from_settings(Settings(database_url=db_url))
    with ctx.db.write() as s:
        _, manager = create_user(s, name="王经理", role="manager", team="A", create_missing_team=True)
        sellers = [
            create_user(s, name=f"销售{i}", role="sales", team="A", create_missing_team=True, wecom_userid=m)[0].id
            for i, m in enumerate(MEMBERS)
        ]
    with FakeWeChatServer(strict_state(wecom_users=MEMBERS)) as fake:
        env = {f"LEADPUSH_{k.upper()}": str(v) for k, v in channel_settings(fake.url).items() if v is not None}
        env["LEADPUSH_WECOM_DUPLICATE_CHECK_SECONDS"] = str(check)
        env.update(
            {"LEADPUSH_DATABASE_URL": db_url, "LEADPUSH_DELIVERY_POLL_INTERVAL": "0.5", "LEADPUSH_LOG_LEVEL": "WARNING"}
        )
        fake.state.add_fault(WECOM_SEND_PATH, "late", delay=LATE)
        node = LeadpushProcess(env, (), tmp_path, "wecom-crash").start()
        try:
            with httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {manager}"}, timeout=30) as http:
                r = http.post(
                    "/api/customers", json=[{"name": f"客户{i}", "phone": f"1360000{i:04d}"} for i in range(CARDS)]
                )
                leads = [c["id"] for c in r.json()["data"]["customers"]]
                for i, lead in enumerate(leads):
                    r = http.patch(f"/api/customers/{lead}/assign", json={"assignedTo": sellers[i % len(sellers)]})
                    assert r.status_code == 200, r.text
            deadline = time.monotonic() + 30
            while not (fake.state.get_messages("wecom") and wecom_count(ctx, "sending")):
                assert time.monotonic() < deadline, "no WeCom card went out"
                time.sleep(0.02)
            node.kill9()  # WeCom has shown cards whose answers are still held back: nobody records them
            shown_at_kill = len(fake.state.get_messages("wecom"))
            assert wecom_count(ctx, "sent") < shown_at_kill, "the kill must land after WeCom took cards"
            fake.state.clear_faults()

            node = LeadpushProcess(env, (), tmp_path, "wecom-crash-restarted").start()
            deadline = time.monotonic() + 60
            while wecom_count(ctx, "sent") < CARDS:
                assert time.monotonic() < deadline, f"{wecom_count(ctx, 'sent')} of {CARDS} WeCom cards sent"
                time.sleep(0.1)
        finally:
            node.stop()
            ctx.db.dispose()

        shown = Counter(m["body"]["textcard"]["url"] for m in fake.state.get_messages("wecom"))
        repeats = fake.state.get_wecom_duplicates()
        assert len(shown) == CARDS
        if check:
            assert set(shown.values()) == {1}, shown.most_common(3)  # each card once
            assert repeats, "the restarted process sent nothing again: the kill did not catch a send mid-flight"
            assert {d["body"]["textcard"]["url"] for d in repeats} <= set(shown)
            resent = len(repeats)
        else:
            assert repeats == []
            resent = sum(n - 1 for n in shown.values())
            assert 1 <= resent <= Settings().delivery_concurrency, shown.most_common(3)
    print(f"kill -9 with {shown_at_kill} cards shown; {resent} sent again (duplicate check {check} s)")
