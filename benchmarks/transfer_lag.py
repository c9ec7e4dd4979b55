"""Automatic-transfer lag: how long after a lead's deadline it actually moves.

An admin creates a rule through the API — no follow-up within a few seconds of assignment → back
to the public pool — and a manager assigns leads one by one to salespeople whose WebSockets are
open. Each assignment response carries the lead's `transferDueAt`. The scheduler (in the same
process on SQLite; its own process with PostgreSQL + Redis) sleeps until the earliest deadline and
runs a transfer; the previous owner then gets `customer_recycled`. Reported per lead:
- moved − due: the history row the run wrote (`assignments.created_at`, the run's start time);
- notice − due: when the salesperson's socket received `customer_recycled` (moved, committed and pushed).

    python -m benchmarks.transfer_lag [--quick] [--deadline-seconds 3] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from datetime import datetime
from typing import Any

from sqlalchemy import select

from benchmarks.common import (
    HttpConnection,
    backends,
    base_parser,
    check,
    deployment,
    host_port,
    log,
    make_leads,
    make_team,
    make_users,
    ms_stats,
    print_table,
    sync_client,
    write_json,
)
from benchmarks.wsclient import Listener


def moved_at(db_url: str, leads: list[int]) -> dict[int, datetime]:
    from leadpush.assignment.models import Assignment
    from leadpush.db import Database

    db = Database(db_url)
    try:
        with db.read() as session:
            rows = session.execute(
                select(Assignment.customer_id, Assignment.created_at).where(
                    Assignment.customer_id.in_(leads), Assignment.via == "auto_transfer"
                )
            ).all()
    finally:
        db.dispose()
    return dict(rows)


async def assign_and_wait(dep, manager, sales, leads: list[int], spacing: float, deadline: float) -> dict[str, Any]:  # noqa: ANN001
    listeners = {u.id: await Listener(dep.api[0].ws_url, u.token).open() for u in sales}
    await asyncio.sleep(0.7)
    conns = [HttpConnection(*host_port(s.url)) for s in dep.api]
    due: dict[int, float] = {}
    waits: dict[int, asyncio.Future[float]] = {}
    # perf_counter ↔ wall clock, to compare socket arrival times with the server's due times.
    offset = time.time() - time.perf_counter()
    for i, lead in enumerate(leads):
        user = sales[i % len(sales)]
        waits[lead] = listeners[user.id].expect(("customer_recycled", lead))
        status, body = await conns[i % len(conns)].request(
            "PATCH", f"/api/customers/{lead}/assign", {"assignedTo": user.id}, manager.token
        )
        if status != 200 or not body["data"].get("transferDueAt"):
            raise RuntimeError(f"assign without a deadline: {status} {body}")
        due[lead] = datetime.fromisoformat(body["data"]["transferDueAt"].replace("Z", "+00:00")).timestamp()
        await asyncio.sleep(spacing * (0.5 + random.random()))
    done, pending = await asyncio.wait(list(waits.values()), timeout=deadline + 30)
    notice = {lead: fut.result() + offset - due[lead] for lead, fut in waits.items() if fut.done()}
    for c in conns:
        c.close()
    for listener in listeners.values():
        await listener.close()
    return {"due": due, "notice_lag": notice, "lost": len(pending)}


def bench(kind: str, quick: bool, deadline: float) -> dict[str, Any]:
    n = 10 if quick else 40
    with deployment(kind) as dep:
        manager, sales = make_team(dep.db_url, 5)
        (admin,) = make_users(dep.db_url, [{"name": "管理员", "role": "admin", "team": None}])
        leads = make_leads(dep.db_url, n)
        with sync_client(dep.api[0].url, admin.token) as http:
            rule = check(
                http.post(
                    "/api/auto-transfer/rules",
                    json={
                        "name": f"{deadline:g} 秒未跟进退回公海",
                        "condition": "no_follow_up_after_assign",
                        "thresholdHours": deadline / 3600,
                        "action": "public_pool",
                    },
                )
            )
        r = asyncio.run(assign_and_wait(dep, manager, sales, leads, spacing=0.25, deadline=deadline))
        moved = moved_at(dep.db_url, leads)
        moved_lag = [moved[lead].timestamp() - r["due"][lead] for lead in leads if lead in moved]
        out = {
            "backend": kind,
            "deployment": dep.describe(),
            "rule_id": rule["id"],
            "deadline_seconds": deadline,
            "leads": n,
            "moved": len(moved),
            "lost_notices": r["lost"],
            "moved_minus_due": ms_stats(moved_lag),
            "notice_minus_due": ms_stats(list(r["notice_lag"].values())),
        }
        log(
            f"{kind}: {len(moved)}/{n} moved; moved − due p50 {out['moved_minus_due']['p50']} ms,"
            f" notice − due p99 {out['notice_minus_due']['p99']} ms, max {out['notice_minus_due']['max']} ms"
        )
        return out


def report(results: list[dict[str, Any]]) -> None:
    rows = []
    for r in results:
        for label in ("moved_minus_due", "notice_minus_due"):
            s = r[label]
            rows.append([f"{r['backend']}: {label.replace('_', ' ')}", s["n"], s["p50"], s["p99"], s["max"]])
    print_table("Automatic-transfer lag after the deadline (ms)", ["figure", "n", "p50", "p99", "max"], rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--deadline-seconds", type=float, default=3.0, help="the rule's threshold, in seconds")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    results = [bench(kind, args.quick, args.deadline_seconds) for kind in backends(args.backend)]
    report(results)
    out = {"name": "transfer_lag", "quick": args.quick, "results": results}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
