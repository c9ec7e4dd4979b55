"""The second floor for the assignment API: the rows an assignment writes, with the bare driver.

Same stack as benchmarks.floor_fastapi (FastAPI, a sync route in anyio's default thread pool, uvicorn,
log level WARNING) and the same URL, body and envelope as `PATCH /api/customers/{id}/assign` — but the
route writes, in one transaction with the bare driver (sqlite3, or psycopg with a connection per thread),
what leadpush writes for one reassignment into leadpush's own migrated schema (same tables, indexes and
foreign keys): the lead's owner, version, times and cleared deadline; the history row; a
`customer_assigned` notification to the new owner and a `customer_recycled` one to the previous owner, each
with its `prev_id` (the recipient's latest id, read under the per-recipient advisory lock on PostgreSQL, as
leadpush orders them); and their in-app delivery rows, written sent with their one try as leadpush writes
them since its commit pushes them (on PostgreSQL, after the lock, in one statement, as leadpush's ledger does;
on SQLite the schema's trigger writes each try with its delivery, as for leadpush). No authentication, no rules, no ORM, no response
beyond the envelope. What leadpush spends above this is the price of its Python, not of its rows.

With `--ordering none` (PostgreSQL) the advisory lock is left out: the same rows, but a recipient's ids
no longer rise in commit order (two transactions may read the same latest id). Not a design, a
measurement: what the lock itself costs at the floor (issue 17).

    python -m benchmarks.floor_rows --port 8124 --url sqlite:////tmp/x.db --actor 1 [--ordering lock|none]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import threading
from datetime import UTC, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field

LOCK = (
    "SELECT count(pg_advisory_xact_lock(7301, r)) FROM"
    " (SELECT r FROM unnest(CAST(%s AS integer[])) AS r ORDER BY r) AS ordered"
)


# PostgreSQL: the notifications (each `prev_id` the recipient's latest id, read after the lock: a statement's
# snapshot is taken when it starts) and their in-app deliveries in one statement, as leadpush's ledger does.
PG_ROWS = """
WITH src AS (
  SELECT * FROM json_to_recordset(CAST(%s AS json)) AS r(o int, r int, k text, t text, b text, p text, d text)
), numbered AS (
  SELECT nextval(pg_get_serial_sequence('notifications', 'id')) AS id, s.* FROM (SELECT * FROM src ORDER BY o) AS s
), chained AS (
  SELECT m.*, coalesce(lag(m.id) OVER (PARTITION BY m.r ORDER BY m.id),
                       (SELECT max(n.id) FROM notifications AS n WHERE n.recipient_id = m.r)) AS prev_id
  FROM numbered AS m
), notes AS (
  INSERT INTO notifications (id, recipient_id, kind, title, body, payload, dedupe_key, prev_id, created_at)
  SELECT id, r, k, t, b, CAST(p AS json), d, prev_id, %s FROM chained RETURNING id
), dels AS (
  INSERT INTO deliveries (notification_id, recipient_id, channel, status, attempts, policy, next_attempt_at,
                          created_at, updated_at, sent_at)
  SELECT id, r, 'inapp', 'sent', 1, '站内通知始终发送', NULL, %s, %s, %s FROM chained RETURNING id
)
INSERT INTO delivery_attempts (delivery_id, attempt, started_at, finished_at, outcome, status, detail)
SELECT id, 1, %s, %s, 'sent', 'sent', '提交时已推送到站内连接' FROM dels
"""


class AssignBody(BaseModel):
    assigned_to: int = Field(alias="assignedTo")


def _note(kind: str, lead: tuple[Any, ...], version: int, now: Any) -> tuple[str, str, str, str, str]:
    """kind, title, body, payload (JSON text), dedupe key: about the size of leadpush's own."""
    cid, _owner, _version, name, phone, source = lead
    title = f"新线索「{name}」已分配给您" if kind == "customer_assigned" else f"线索「{name}」已被收回"
    payload = {
        "customerId": cid,
        "customerName": name,
        "customerPhone": phone,
        "source": source,
        "assignTime": str(now)[:19],
        "via": "web",
        "actorName": "经理",
    }
    return (
        kind,
        title,
        f"来源：{source}，电话：{phone}",
        json.dumps(payload, ensure_ascii=False),
        f"{kind}:{cid}:{version}",
    )


class Writer:
    """One assignment's rows in one transaction; `param` is the driver's placeholder."""

    def __init__(self, actor: int, param: str, postgres: bool, lock: bool = True) -> None:
        self.actor, self.p, self.postgres, self.lock = actor, param, postgres, lock

    def sql(self, text: str) -> str:
        return text.replace("?", self.p)

    def assign(self, cur: Any, customer_id: int, to: int, now: Any) -> bool:
        cur.execute(
            self.sql("SELECT id, owner_id, version, name, phone, source FROM customers WHERE id = ?"), (customer_id,)
        )
        lead = cur.fetchone()
        if lead is None:
            return False
        previous, version = lead[1], lead[2]
        if previous == to:
            return True
        cur.execute(
            self.sql(
                "UPDATE customers SET owner_id = ?, version = ?, assigned_at = ?, pool_id = NULL, pooled_at = NULL,"
                " updated_at = ?, transfer_due_at = NULL, transfer_warn_at = NULL, transfer_rule_id = NULL,"
                " transfer_warned_for = NULL WHERE id = ? AND version = ?"
            ),
            (to, version + 1, now, now, customer_id, version),
        )
        cur.execute(
            self.sql(
                "INSERT INTO assignments (customer_id, from_user_id, to_user_id, actor_id, via, created_at)"
                " VALUES (?, ?, ?, ?, 'web', ?)"
            ),
            (customer_id, previous, to, self.actor, now),
        )
        notes = [(to, _note("customer_assigned", lead, version + 1, now))]
        if previous is not None:
            notes.append((previous, _note("customer_recycled", lead, version + 1, now)))
        recipients = sorted({r for r, _ in notes})
        if self.postgres and self.lock:
            cur.execute(LOCK, (recipients,))
        if self.postgres:
            # As leadpush writes them (notify/ledger.py): after the lock, one statement reads the latest ids
            # and inserts the notifications and their deliveries, so the lock is held over two round trips.
            rows = [
                {"o": i, "r": rid, "k": kind, "t": title, "b": body, "p": payload, "d": key}
                for i, (rid, (kind, title, body, payload, key)) in enumerate(notes)
            ]
            cur.execute(PG_ROWS, (json.dumps(rows, ensure_ascii=False), now, now, now, now, now, now))
            return True
        marks = ", ".join([self.p] * len(recipients))
        cur.execute(
            f"SELECT recipient_id, max(id) FROM notifications WHERE recipient_id IN ({marks}) GROUP BY recipient_id",
            recipients,
        )
        last = dict(cur.fetchall())
        ids = []
        for rid, (kind, title, body, payload, key) in notes:
            cur.execute(
                self.sql(
                    "INSERT INTO notifications (recipient_id, kind, title, body, payload, dedupe_key, prev_id,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
                ),
                (rid, kind, title, body, payload, key, last.get(rid), now),
            )
            ids.append((cur.fetchone()[0], rid))
            last[rid] = ids[-1][0]
        cur.executemany(
            self.sql(
                "INSERT INTO deliveries (notification_id, recipient_id, channel, status, attempts, policy,"
                " next_attempt_at, created_at, updated_at, sent_at)"
                " VALUES (?, ?, 'inapp', 'sent', 1, '站内通知始终发送', NULL, ?, ?, ?)"
            ),
            [(nid, rid, now, now, now) for nid, rid in ids],
        )
        # Their one try each: the schema's trigger writes it with the delivery (migration 0012), as for leadpush.
        return True


def create_app(url: str, actor: int, ordering: str = "lock") -> FastAPI:
    app = FastAPI()
    local = threading.local()
    postgres = not url.startswith("sqlite")
    write_lock = threading.Lock()  # SQLite: writers queue on a Python lock, as in leadpush and the first floor
    writer = Writer(actor, "%s" if postgres else "?", postgres, lock=ordering == "lock")

    def connection() -> Any:
        conn = getattr(local, "conn", None)
        if conn is None:
            if postgres:
                import psycopg

                conn = psycopg.connect(url)
            else:
                conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False)
                for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000", "foreign_keys=ON"):
                    conn.execute(f"PRAGMA {pragma}")
            local.conn = conn
        return conn

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.patch("/api/customers/{customer_id}/assign")
    def assign(customer_id: int, body: AssignBody) -> dict[str, object]:
        conn = connection()
        now = datetime.now(UTC).replace(tzinfo=None)
        if postgres:
            with conn.transaction(), conn.cursor() as cur:
                found = writer.assign(cur, customer_id, body.assigned_to, now)
        else:
            stamp = now.isoformat(sep=" ")
            with write_lock:
                cur = conn.cursor()
                cur.execute("BEGIN IMMEDIATE")
                try:
                    found = writer.assign(cur, customer_id, body.assigned_to, stamp)
                    cur.execute("COMMIT")
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
        return {
            "success": found,
            "message": "分配成功",
            "data": {"id": customer_id, "ownerId": body.assigned_to},
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--url", required=True, help="a migrated leadpush database (sqlite:///… or postgresql://…)")
    parser.add_argument("--actor", type=int, required=True, help="the manager's user id, for the history rows")
    parser.add_argument(
        "--ordering",
        choices=("lock", "none"),
        default="lock",
        help="lock: the per-recipient advisory lock, as leadpush (default); none: without it (to measure its cost)",
    )
    args = parser.parse_args()
    uvicorn.run(create_app(args.url, args.actor, args.ordering), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
