"""The floor for the assignment API: FastAPI + SQLite, an endpoint that only updates an owner column.

Same stack as leadpush (FastAPI, a sync route in the thread pool, uvicorn with its default loop and
HTTP parser, SQLite in WAL mode with synchronous=NORMAL, writers queued on a Python lock, log level
WARNING) and the same URL, body and envelope as `PATCH /api/customers/{id}/assign` — but no
authentication, no history, no notification, no deadline. Whatever leadpush spends above this is the
price of what it does.

    python -m benchmarks.floor_fastapi --port 8123 --db /tmp/floor.db --leads 10000
"""

from __future__ import annotations

import argparse
import sqlite3
import threading

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field


class AssignBody(BaseModel):
    assigned_to: int = Field(alias="assignedTo")


def create_app(path: str) -> FastAPI:
    app = FastAPI()
    local = threading.local()
    write_lock = threading.Lock()

    def connection() -> sqlite3.Connection:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            local.conn = conn
        return conn

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.patch("/api/customers/{customer_id}/assign")
    def assign(customer_id: int, body: AssignBody) -> dict[str, object]:
        conn = connection()
        with write_lock:
            conn.execute("BEGIN IMMEDIATE")
            changed = conn.execute(
                "UPDATE customers SET owner_id = ? WHERE id = ?", (body.assigned_to, customer_id)
            ).rowcount
            conn.execute("COMMIT")
        return {
            "success": bool(changed),
            "message": "分配成功",
            "data": {"id": customer_id, "ownerId": body.assigned_to},
        }

    return app


def prepare(path: str, leads: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS customers (id INTEGER PRIMARY KEY, name TEXT, owner_id INTEGER)")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO customers (id, name, owner_id) VALUES (?, ?, NULL)", [(i, f"c{i}") for i in range(1, leads + 1)]
    )
    conn.execute("COMMIT")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--leads", type=int, default=10_000)
    args = parser.parse_args()
    prepare(args.db, args.leads)
    uvicorn.run(create_app(args.db), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
