"""The ledger's write on PostgreSQL costs the same on a ledger of any size, whatever the planner's statistics.

The write drops notifications whose dedupe key is stored. A table the planner has never counted (a new
install, or a ledger that grew since autovacuum last analysed it) is estimated at a few dozen rows; planned
as a join, the check then read every stored notification, hashed them, and probed the hash: an assignment's
write grew with the ledger (3 ms on 2,000 rows in the assignment benchmark, where it was half of
PostgreSQL's time per assignment). Probed per new notification on the key's unique index, it reads a few
pages.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from support.servers import bare_context
from support.statements import listening

from leadpush.context import AppContext
from leadpush.notify.ledger import NewNotification, write_notifications
from leadpush.notify.signals import Signals
from leadpush.users.models import User

STORED = 20_000  # notifications already in the ledger, never analysed


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppContext]:
    with bare_context("postgres", str(tmp_path_factory.mktemp("ledgerplan"))) as context:
        yield context


def plan_of(ctx: AppContext, statement: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """EXPLAIN ANALYZE of the statement as the driver ran it, in a transaction rolled back."""
    raw = ctx.db.engine.raw_connection()
    try:
        with raw.cursor() as cur:
            cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters)
            (doc,) = cur.fetchone()
        raw.rollback()
    finally:
        raw.close()
    return (json.loads(doc) if isinstance(doc, str) else doc)[0]["Plan"]


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def test_write_reads_a_few_pages_of_a_large_unanalysed_ledger(ctx: AppContext) -> None:
    with ctx.db.engine.begin() as conn:
        # Kept unanalysed for the test: the planner's estimate is what a new install's is.
        conn.execute(text("ALTER TABLE notifications SET (autovacuum_enabled = false)"))
        conn.execute(text("INSERT INTO users (name, role, active, created_at) VALUES ('李丽', 'sales', true, now())"))
        conn.execute(
            text(
                "INSERT INTO notifications (recipient_id, kind, title, body, payload, dedupe_key, created_at)"
                " SELECT 1, 'customer_assigned', '新线索 ' || i, '请尽快跟进', '{}', 'old-' || i, now()"
                " FROM generate_series(1, :n) AS i"
            ),
            {"n": STORED},
        )
        counted = conn.scalar(text("SELECT reltuples FROM pg_class WHERE relname = 'notifications'"))
    assert counted is not None and counted < 1, "the ledger must be unanalysed for this test"

    seen: list[tuple[str, dict[str, Any]]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        if "json_to_recordset" in statement:
            seen.append((statement, dict(parameters)))

    with listening(ctx, before_cursor_execute=capture), ctx.db.write() as session:
        alice = session.get(User, 1)
        assert alice is not None
        new = NewNotification(
            recipient=alice,
            kind="customer_assigned",
            title="新线索 张三",
            body="请尽快跟进",
            payload={"customerId": 7},
            dedupe_key="new-1",
        )
        written = write_notifications(session, ctx.settings, Signals(), [new], ctx.clock.now())
    assert [n.id for n in written] == [STORED + 1]
    assert len(seen) == 1

    plan = plan_of(ctx, *seen[0])
    scanned = [n for n in nodes(plan) if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "notifications"]
    pages = plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)
    # The 20,000 stored notifications fill some 280 pages; the write itself touches a few dozen.
    assert not scanned, json.dumps(plan, ensure_ascii=False)[:2000]
    assert pages < 200, pages
