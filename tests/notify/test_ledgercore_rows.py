"""The ledger's last step writes with Core statements, few of them (issue 17: CPU per assignment, the convoy).

On PostgreSQL the per-recipient lock is held from its statement to the COMMIT: everything between is one
statement now (stored keys dropped, latest ids read, notifications and deliveries inserted), so a holder waits
for one round trip and one turn at the interpreter there instead of three. On SQLite a round of notifications
is one INSERT ... SELECT and the deliveries one INSERT. What they store must read exactly as what the ORM
stored: the same ids handed back to the objects in hand, the same timestamps (compared as text on SQLite),
the same payloads, the `prev_id` chain.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from support import DATABASES, wipe
from support.servers import bare_context
from support.statements import Statements

from leadpush.context import AppContext
from leadpush.notify.ledger import NewNotification, planned_deliveries, write_notifications, write_prepared
from leadpush.notify.models import Delivery, Notification
from leadpush.users.models import User


@pytest.fixture(scope="module", params=DATABASES)
def ctx(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppContext]:
    with bare_context(request.param, str(tmp_path_factory.mktemp(f"ledgercore-{request.param}"))) as context:
        yield context


@pytest.fixture
def db(ctx: AppContext) -> AppContext:
    wipe(ctx)
    return ctx


def people(ctx: AppContext, *names: str, openid: bool = False) -> list[User]:
    """Sales people; with `openid` each has a WeChat openid (a WeChat row beside the in-app one)."""
    with ctx.db.write() as session:
        users = [User(name=n, role="sales", active=True, wechat_openid=f"o-{n}" if openid else None) for n in names]
        session.add_all(users)
    return users


def item(recipient: User, key: str, actor_id: int | None = None) -> NewNotification:
    return NewNotification(
        recipient=recipient,
        kind="customer_assigned",
        title=f"新线索 {key}",
        body="请尽快跟进",
        payload={"customerId": 7, "customerName": "张三", "tags": ["高意向", "复购"], "nested": {"a": None}},
        dedupe_key=key,
        actor_id=actor_id,
    )


def test_the_last_step_is_the_lock_and_one_statement_on_postgres_two_on_sqlite(db: AppContext) -> None:
    """An assignment's two notices (two people, an in-app row and a WeChat row each): on PostgreSQL the lock
    and ONE statement before the COMMIT; on SQLite one INSERT of the notifications, one of the deliveries."""
    alice, bob = people(db, "李丽", "赵强", openid=True)
    now = db.clock.now()
    with Statements(db) as st, db.db.write() as session:
        notes = write_notifications(session, db.settings, db.signals, [item(alice, "a1"), item(bob, "b1")], now)
        st.on = True
        write_prepared(session)
        st.on = False
    listing = "\n".join(st.seen)
    if db.db.is_postgres:
        assert len(st.seen) == 2 and "pg_advisory_xact_lock" in st.seen[0], listing
    else:
        assert len(st.seen) == 2, listing
    assert all(n.id is not None for n in notes)
    assert all(len(planned_deliveries(n) or []) >= 2 for n in notes)


def test_rows_read_back_as_the_objects_in_hand_say(db: AppContext) -> None:
    alice, bob = people(db, "李丽", "赵强", openid=True)
    now = db.clock.now()
    with db.db.write() as session:
        (before,) = write_notifications(session, db.settings, db.signals, [item(alice, "old")], now)
    db.clock.advance(seconds=3)
    later = db.clock.now()
    with db.db.write() as session:
        notes = write_notifications(
            session,
            db.settings,
            db.signals,
            # alice three times (rounds on SQLite), one already stored; bob's notice about his own action.
            [item(alice, "a1"), item(bob, "b1", actor_id=bob.id), item(alice, "old"), item(alice, "a2")],
            later,
        )
    assert [n.dedupe_key for n in notes] == ["a1", "b1", "a2"]
    a1, b1, a2 = notes
    assert (a1.prev_id, a2.prev_id, b1.prev_id) == (before.id, a1.id, None)
    assert before.id < a1.id < a2.id
    with db.db.read() as session:
        stored = {n.id: n for n in session.scalars(select(Notification))}
        rows = {d.id: d for d in session.scalars(select(Delivery))}
        for note in notes:
            row = stored[note.id]
            assert (row.recipient_id, row.kind, row.title, row.body, row.dedupe_key, row.prev_id) == (
                note.recipient_id,
                note.kind,
                note.title,
                note.body,
                note.dedupe_key,
                note.prev_id,
            )
            assert row.payload == note.payload
            assert row.created_at == later and row.delivered_at is None
            assert row.read_at == (later if note is b1 else None)
            planned = planned_deliveries(note) or []
            assert planned and {d.id for d in planned} == {d.id for d in rows.values() if d.notification_id == note.id}
            for d in planned:
                r = rows[d.id]
                assert (r.notification_id, r.recipient_id, r.channel, r.status, r.policy) == (
                    note.id,
                    note.recipient_id,
                    d.channel,
                    d.status,
                    d.policy,
                )
                assert (r.attempts, r.lease_until, r.sent_at, r.merged_into, r.hold_reason) == (
                    0,
                    None,
                    None,
                    None,
                    None,
                )
                assert (r.created_at, r.updated_at, r.next_attempt_at) == (later, later, d.next_attempt_at)
        # What the dispatcher's due query compares: the rows are due now, not a moment before.
        due = Delivery.status == "pending", Delivery.notification_id.in_([n.id for n in notes])
        assert (
            session.scalar(
                select(Delivery.id).where(*due, Delivery.next_attempt_at <= later - timedelta(microseconds=1))
            )
            is None
        )
        assert session.scalar(select(Delivery.id).where(*due, Delivery.next_attempt_at <= later)) is not None
    if db.db.is_sqlite:
        # The very text the ORM stores (SQLite compares timestamps as text): a row the ORM writes, same moment.
        with db.db.write() as session:
            orm = Notification(
                recipient_id=alice.id,
                kind="customer_assigned",
                title="t",
                body="",
                payload={},
                dedupe_key="orm",
                created_at=later,
                read_at=later,
            )
            session.add(orm)
        with db.db.read() as session:
            raw = dict(tuple(r) for r in session.execute(text("SELECT dedupe_key, created_at FROM notifications")))
            raw_read = dict(tuple(r) for r in session.execute(text("SELECT dedupe_key, read_at FROM notifications")))
        assert raw["a1"] == raw["orm"] and raw_read["b1"] == raw_read["orm"], (raw, raw_read)


def test_nothing_new_when_every_key_is_stored(db: AppContext) -> None:
    (alice,) = people(db, "李丽")
    now = db.clock.now()
    with db.db.write() as session:
        write_notifications(session, db.settings, db.signals, [item(alice, "k1")], now)
    committed: list[set[int]] = []
    db.signals.subscribe(committed.append)
    try:
        with db.db.write() as session:
            again = write_notifications(session, db.settings, db.signals, [item(alice, "k1")], now)
    finally:
        db.signals.unsubscribe(committed.append)
    assert again == [] and committed == []
    with db.db.read() as session:
        assert session.scalar(select(Notification.dedupe_key)) == "k1"
