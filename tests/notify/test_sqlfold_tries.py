"""The one try of each in-app delivery the commit pushes, written with the delivery (issue 17: statements per
assignment, the SQLite write lock).

While this process pushes what it commits (a pushing commit listener is subscribed), the ledger writes each
in-app delivery as sent, with its one `delivery_attempts` row. On SQLite that row is no statement of its own:
the deliveries' INSERT writes it (the schema's trigger), so the last step is one INSERT per round of
notifications and one INSERT of the deliveries, pushed or not. The rows must read exactly as before: one try per
in-app delivery written sent (attempt 1, started and finished at its `sent_at`, outcome and status `sent`, the
detail the history shows), none for a pending row, none at all when nothing pushes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text
from support import DATABASES, wipe
from support.servers import bare_context
from support.statements import Statements

from leadpush.context import AppContext
from leadpush.notify.ledger import (
    PUSHED_AT_COMMIT,
    NewNotification,
    planned_deliveries,
    write_notifications,
    write_prepared,
)
from leadpush.notify.models import Delivery, DeliveryAttempt
from leadpush.users.models import User


@pytest.fixture(scope="module", params=DATABASES)
def ctx(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppContext]:
    with bare_context(request.param, str(tmp_path_factory.mktemp(f"sqlfold-{request.param}"))) as context:
        yield context


@pytest.fixture
def db(ctx: AppContext) -> AppContext:
    wipe(ctx)
    return ctx


@pytest.fixture
def pushing(db: AppContext) -> Iterator[list[int]]:
    """A pushing commit listener, as the api runtime subscribes one: what each commit says it pushed."""
    sent: list[int] = []

    def listener(_recipients: set[int], _pushed: Any, inapp_sent: int, _wake: Any) -> None:
        sent.append(inapp_sent)

    db.signals.subscribe_commits(listener, pushes_inapp=True)
    try:
        yield sent
    finally:
        db.signals.unsubscribe_commits(listener)


def people(ctx: AppContext, *names: str) -> list[User]:
    """Sales people with a WeChat openid each: a WeChat row (not sent) beside the in-app one."""
    with ctx.db.write() as session:
        users = [User(name=n, role="sales", active=True, wechat_openid=f"o-{n}") for n in names]
        session.add_all(users)
    return users


def item(recipient: User, key: str) -> NewNotification:
    return NewNotification(
        recipient=recipient,
        kind="customer_assigned",
        title=f"新线索 {key}",
        body="请尽快跟进",
        payload={"customerId": 7, "customerName": "张三"},
        dedupe_key=key,
    )


def test_sqlfold_pushed_in_app_rows_and_their_tries_take_no_statement_of_their_own(
    db: AppContext, pushing: list[int]
) -> None:
    """Alice twice (two rounds of notifications on SQLite) and Bob once, all pushed by the commit."""
    alice, bob = people(db, "李丽", "赵强")
    now = db.clock.now()
    with Statements(db) as st, db.db.write() as session:
        notes = write_notifications(
            session, db.settings, db.signals, [item(alice, "a1"), item(bob, "b1"), item(alice, "a2")], now
        )
        st.on = True
        write_prepared(session)
        st.on = False
    listing = "\n".join(st.seen)
    if db.db.is_postgres:
        assert len(st.seen) == 2 and "pg_advisory_xact_lock" in st.seen[0], listing
    else:  # two rounds of notifications, one INSERT of the deliveries: nothing for the tries
        assert len(st.seen) == 3 and not any("delivery_attempts" in s for s in st.seen), listing
    assert pushing == [3]
    inapp = [d for n in notes for d in planned_deliveries(n) or [] if d.channel == "inapp"]
    assert len(inapp) == 3 and all(d.status == "sent" and d.id is not None for d in inapp)
    with db.db.read() as session:
        rows = {d.id: d for d in session.scalars(select(Delivery))}
        tries = list(session.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id)))
    # One try per in-app row written sent, in the order the deliveries were written; none for WeChat's.
    assert [t.delivery_id for t in tries] == sorted(d.id for d in inapp)
    for t in tries:
        d = rows[t.delivery_id]
        assert (d.channel, d.status, d.attempts, d.sent_at, d.next_attempt_at) == ("inapp", "sent", 1, now, None)
        assert (t.attempt, t.started_at, t.finished_at, t.outcome, t.status, t.errcode, t.detail, t.worker) == (
            1,
            now,
            now,
            "sent",
            "sent",
            None,
            PUSHED_AT_COMMIT,
            None,
        )
    others = [(d.channel, d.status, d.attempts) for d in rows.values() if d.channel != "inapp"]
    assert others and all(status != "sent" and attempts == 0 for _, status, attempts in others), others
    if db.db.is_sqlite:  # compared as text there: the try's times are the delivery's very text
        with db.db.read() as session:
            raw = session.execute(
                text(
                    "SELECT d.sent_at, a.started_at, a.finished_at FROM delivery_attempts AS a"
                    " JOIN deliveries AS d ON d.id = a.delivery_id"
                )
            ).all()
        assert len(raw) == 3 and all(sent == started == finished for sent, started, finished in raw), raw


def test_sqlfold_nothing_pushes_no_tries(db: AppContext) -> None:
    """A process that does not push (a script, `leadpush transfer run`): pending in-app rows, no try."""
    (alice,) = people(db, "李丽")
    now = db.clock.now()
    with db.db.write() as session:
        (note,) = write_notifications(session, db.settings, db.signals, [item(alice, "a1")], now)
    with db.db.read() as session:
        assert session.scalar(select(DeliveryAttempt.id)) is None
        rows = [(d.channel, d.status, d.attempts) for d in session.scalars(select(Delivery))]
    assert ("inapp", "pending", 0) in rows and all(status != "sent" and n == 0 for _, status, n in rows), rows
    assert note.id is not None
