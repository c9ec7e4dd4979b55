"""The ledger takes its per-recipient locks as a transaction's last step (issue 17, the lock convoy).

`write_notifications` only prepares; the rows are written (recipients locked, dedupe keys dropped, latest ids
read, notifications and deliveries inserted) just before commit. So a transaction that has prepared a
notice for someone and is still busy with other work holds nothing that another transaction's notice for
the same person must wait for, while each person's ids still rise in commit order (a client resuming with
`after=<id>` misses nothing) and `prev_id` still chains them.

Threads wait on events, each wait bounded; nothing sleeps to guess at timing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import select
from support import DATABASES, wipe
from support.servers import bare_context

from leadpush.context import AppContext
from leadpush.notify.ledger import NewNotification, write_notifications
from leadpush.notify.models import Delivery, Notification
from leadpush.users.models import User

WAIT = 10.0  # seconds: the bound on every wait (the machine is shared and may be slow)


@pytest.fixture(scope="module", params=DATABASES)
def ctx(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppContext]:
    with bare_context(request.param, str(tmp_path_factory.mktemp(f"ledger-{request.param}"))) as context:
        yield context


@pytest.fixture
def db(ctx: AppContext) -> AppContext:
    wipe(ctx)
    return ctx


def people(ctx: AppContext, *names: str, active: bool = True) -> list[User]:
    with ctx.db.write() as session:
        users = [User(name=n, role="sales", active=active) for n in names]
        session.add_all(users)
    return users


def item(recipient: User, key: str, actor_id: int | None = None) -> NewNotification:
    return NewNotification(
        recipient=recipient,
        kind="customer_assigned",
        title=f"新线索 {key}",
        body="",
        payload={"customerId": 1, "customerName": "张三"},
        dedupe_key=key,
        actor_id=actor_id,
    )


def rows_of(ctx: AppContext, recipient_id: int) -> list[Notification]:
    with ctx.db.read() as session:
        return list(
            session.scalars(
                select(Notification).where(Notification.recipient_id == recipient_id).order_by(Notification.id)
            )
        )


def assert_chained(notes: list[Notification]) -> None:
    """Each of a person's notifications points back at the one before it (by id)."""
    assert [n.prev_id for n in notes] == [None, *[n.id for n in notes[:-1]]]


def test_an_open_transaction_that_prepared_a_notice_does_not_hold_up_another(db: AppContext) -> None:
    if not db.db.is_postgres:
        pytest.skip("SQLite serialises whole write transactions (BEGIN IMMEDIATE): nothing to overlap")
    (alice,) = people(db, "李丽")
    prepared, second_committed = threading.Event(), threading.Event()
    first_waited: list[bool] = []

    def first() -> None:
        with db.db.write() as session:
            write_notifications(session, db.settings, db.signals, [item(alice, "first")], db.clock.now())
            prepared.set()
            # Still busy (other rows, Python work): another notice for alice commits meanwhile.
            first_waited.append(second_committed.wait(WAIT))

    def second() -> None:
        assert prepared.wait(WAIT)
        with db.db.write() as session:
            write_notifications(session, db.settings, db.signals, [item(alice, "second")], db.clock.now())
        second_committed.set()

    with ThreadPoolExecutor(2) as pool:
        done = [pool.submit(first), pool.submit(second)]
        for f in done:
            f.result(timeout=3 * WAIT)
    assert first_waited == [True], "the second transaction waited for the first one's commit"
    notes = rows_of(db, alice.id)
    # Committed second-then-first, and numbered so: a client resuming after the second's id sees the first.
    assert [n.dedupe_key for n in notes] == ["second", "first"]
    assert_chained(notes)


def test_each_persons_ids_rise_in_commit_order_under_concurrency(db: AppContext) -> None:
    """Many writers, two recipients each (as an assignment); a reader resuming with `after=<id>` as a client
    does, concurrently: it never skips an id, and every person's notifications chain by prev_id."""
    alice, bob, carol = people(db, "李丽", "赵强", "王芳")
    writers, per_writer = 6, 8
    stop = threading.Event()
    seen: dict[int, list[int]] = {alice.id: [], bob.id: [], carol.id: []}

    def reader() -> None:
        after = dict.fromkeys(seen, 0)
        while True:
            finished = stop.is_set()  # read once more after the last commit
            with db.db.read() as session:
                for rid in seen:
                    ids = list(
                        session.scalars(
                            select(Notification.id)
                            .where(Notification.recipient_id == rid, Notification.id > after[rid])
                            .order_by(Notification.id)
                        )
                    )
                    if ids:
                        seen[rid].extend(ids)
                        after[rid] = ids[-1]
            if finished:
                return

    def writer(w: int) -> None:
        pair = [(alice, bob), (bob, carol), (carol, alice)][w % 3]
        for i in range(per_writer):
            with db.db.write() as session:
                now = db.clock.now()
                write_notifications(session, db.settings, db.signals, [item(p, f"w{w}-{i}-{p.id}") for p in pair], now)

    with ThreadPoolExecutor(writers + 1) as pool:
        watching = pool.submit(reader)
        for f in [pool.submit(writer, w) for w in range(writers)]:
            f.result(timeout=120)
        stop.set()
        watching.result(timeout=60)
    for person in (alice, bob, carol):
        notes = rows_of(db, person.id)
        assert len(notes) == 2 * per_writer * writers // 3
        assert_chained(notes)
        assert seen[person.id] == [n.id for n in notes], "a client resuming with after=<id> skipped one"


def test_a_key_prepared_twice_in_one_transaction_is_written_once(db: AppContext) -> None:
    alice, bob = people(db, "李丽", "赵强")
    now = db.clock.now()
    with db.db.write() as session:
        first = write_notifications(session, db.settings, db.signals, [item(alice, "k1"), item(bob, "k2")], now)
        again = write_notifications(session, db.settings, db.signals, [item(alice, "k1"), item(alice, "k3")], now)
        also = write_notifications(session, db.settings, db.signals, [item(bob, "k2")], now)
        twice = write_notifications(session, db.settings, db.signals, [item(bob, "k4"), item(bob, "k4")], now)
    # After commit each returned list holds what was written, with its id; a repeated key only once.
    assert [n.dedupe_key for n in first] == ["k1", "k2"]
    assert [n.dedupe_key for n in again] == ["k3"]
    assert also == []
    assert [n.dedupe_key for n in twice] == ["k4"]
    assert all(n.id is not None for n in first + again)
    notes = rows_of(db, alice.id)
    assert [(n.id, n.dedupe_key) for n in notes] == [(first[0].id, "k1"), (again[0].id, "k3")]
    assert_chained(notes)
    assert [n.dedupe_key for n in rows_of(db, bob.id)] == ["k2", "k4"]
    assert_chained(rows_of(db, bob.id))


def test_keys_already_written_are_dropped_and_the_chain_goes_on(db: AppContext) -> None:
    (alice,) = people(db, "李丽")
    now = db.clock.now()
    with db.db.write() as session:
        (old,) = write_notifications(session, db.settings, db.signals, [item(alice, "k1")], now)
    with db.db.write() as session:
        created = write_notifications(session, db.settings, db.signals, [item(alice, "k1"), item(alice, "k2")], now)
    assert [n.dedupe_key for n in created] == ["k2"]
    assert created[0].prev_id == old.id
    assert_chained(rows_of(db, alice.id))


def test_own_action_born_read_and_inactive_recipient_skipped(db: AppContext) -> None:
    (alice,) = people(db, "李丽")
    (gone,) = people(db, "离职", active=False)
    now = db.clock.now()
    with db.db.write() as session:
        own, theirs = write_notifications(
            session, db.settings, db.signals, [item(alice, "own", actor_id=alice.id), item(gone, "gone")], now
        )
    assert own.read_at == now and theirs.read_at is None
    with db.db.read() as session:
        rows = {(d.notification_id, d.channel): d for d in session.scalars(select(Delivery))}
        stored = session.get_one(Notification, own.id)
    assert stored.read_at is not None and abs(stored.read_at - now) < timedelta(seconds=1)
    assert rows[(own.id, "inapp")].status == "pending"
    assert {d.status for (nid, _), d in rows.items() if nid == theirs.id} == {"skipped"}


def test_nothing_is_written_when_the_transaction_rolls_back(db: AppContext) -> None:
    (alice,) = people(db, "李丽")
    committed: list[set[int]] = []
    db.signals.subscribe(committed.append)
    try:
        with pytest.raises(RuntimeError), db.db.write() as session:
            write_notifications(session, db.settings, db.signals, [item(alice, "k1")], db.clock.now())
            raise RuntimeError("later step failed")
        with db.db.write() as session:
            write_notifications(session, db.settings, db.signals, [item(alice, "k2")], db.clock.now())
    finally:
        db.signals.unsubscribe(committed.append)
    assert [n.dedupe_key for n in rows_of(db, alice.id)] == ["k2"]
    assert committed == [{alice.id}]
