"""Batch assignment of 10,000 leads: 10 requests of 1,000 to `POST /api/customers/batch-assign`.

10,000 pool leads are inserted straight into the database (so the server's peak memory before the
batches is that of an idle server). A manager then assigns them, 1,000 per request (the API's
maximum), one request after the other, all to one salesperson whose WebSocket is open; then again
with 10 requests sent at once, each to a different salesperson. Reported: total time, per-request
latency, notifications and deliveries created (one digest per request and recipient, by design),
when each digest reached the salesperson's socket, and the serving process's peak RSS (VmHWM)
before and after.

    python -m benchmarks.batch_assign [--quick] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from benchmarks.common import (
    HttpConnection,
    backends,
    base_parser,
    deployment,
    host_port,
    ledger_counts,
    log,
    make_leads,
    make_team,
    ms_stats,
    print_table,
    write_json,
)
from benchmarks.wsclient import Listener

BATCH = 1000


async def run_batches(dep, manager, recipients, leads: list[int], parallel: bool) -> dict[str, Any]:  # noqa: ANN001
    chunks = [leads[i : i + BATCH] for i in range(0, len(leads), BATCH)]
    targets = [recipients[i % len(recipients)] for i in range(len(chunks))]
    listeners = {u.id: await Listener(dep.api[0].ws_url, u.token).open() for u in {t.id: t for t in targets}.values()}
    await asyncio.sleep(0.7)
    conns = [HttpConnection(*host_port(dep.api[i % len(dep.api)].url)) for i in range(len(chunks))]
    latencies: list[float] = []
    responses: list[tuple[int, str, float]] = []
    changed = 0

    async def one(i: int) -> None:
        nonlocal changed
        t0 = time.perf_counter()
        status, body = await conns[i].request(
            "POST",
            "/api/customers/batch-assign",
            {"customerIds": chunks[i], "assignedTo": targets[i].id},
            manager.token,
        )
        t1 = time.perf_counter()
        if status != 200:
            raise RuntimeError(f"batch-assign failed: {status} {str(body)[:300]}")
        latencies.append(t1 - t0)
        changed += len(body["data"]["customers"])
        responses.append((targets[i].id, body["data"]["batchId"], t1))

    started = time.perf_counter()
    if parallel:
        await asyncio.gather(*(one(i) for i in range(len(chunks))))
    else:
        for i in range(len(chunks)):
            await one(i)
    total = time.perf_counter() - started
    arrivals = []
    for uid, batch_id, t1 in responses:
        try:
            arrivals.append(await asyncio.wait_for(listeners[uid].expect(("customers_assigned", batch_id)), 30) - t1)
        except TimeoutError:
            pass
    for c in conns:
        c.close()
    for listener in listeners.values():
        await listener.close()
    return {
        "requests": len(chunks),
        "leads": len(leads),
        "changed": changed,
        "seconds": round(total, 3),
        "leads_per_second": round(changed / total, 1) if total else None,
        "request": ms_stats(latencies),
        "digest_after_response": ms_stats(arrivals),
        "digests_received": len(arrivals),
    }


def bench(kind: str, quick: bool) -> dict[str, Any]:
    n = 3 * BATCH if quick else 10 * BATCH
    with deployment(kind) as dep:
        manager, sales = make_team(dep.db_url, 10)
        out: dict[str, Any] = {"backend": kind, "deployment": dep.describe()}
        for parallel in (False, True):
            leads = make_leads(dep.db_url, n)
            before = ledger_counts(dep.db_url)
            mem_before = {s.name: s.memory() for s in dep.services}
            recipients = sales if parallel else sales[:1]
            r = asyncio.run(run_batches(dep, manager, recipients, leads, parallel))
            after = ledger_counts(dep.db_url)
            mem_after = {s.name: s.memory() for s in dep.services}
            r["notifications_created"] = after["notifications"] - before["notifications"]
            r["deliveries_created"] = after["deliveries"] - before["deliveries"]
            r["memory"] = {
                name: {
                    "hwm_before_mb": round(mem_before[name].get("VmHWM", 0) / 1024, 1),
                    "hwm_after_mb": round(mem_after[name].get("VmHWM", 0) / 1024, 1),
                    "rss_after_mb": round(mem_after[name].get("VmRSS", 0) / 1024, 1),
                }
                for name in mem_after
            }
            api_names = [s.name for s in dep.api]
            r["api_hwm_after_mb"] = max(r["memory"][n_]["hwm_after_mb"] for n_ in api_names)
            r["api_hwm_before_mb"] = max(r["memory"][n_]["hwm_before_mb"] for n_ in api_names)
            key = "parallel" if parallel else "sequential"
            out[key] = r
            log(
                f"{kind} {key}: {r['changed']:,} leads in {r['seconds']} s, {r['notifications_created']} notifications,"
                f" api peak RSS {r['api_hwm_before_mb']} → {r['api_hwm_after_mb']} MB"
            )
        return out


def report(results: list[dict[str, Any]]) -> None:
    rows = []
    for r in results:
        for key in ("sequential", "parallel"):
            b = r[key]
            rows.append(
                [
                    f"{r['backend']} {key}",
                    b["changed"],
                    b["seconds"],
                    b["leads_per_second"],
                    b["request"]["p50"],
                    b["request"]["max"],
                    b["notifications_created"],
                    b["deliveries_created"],
                    b["digest_after_response"]["max"],
                    b["api_hwm_before_mb"],
                    b["api_hwm_after_mb"],
                ]
            )
    print_table(
        f"Batch assignment, {BATCH:,} leads per request",
        [
            "run",
            "leads",
            "total s",
            "leads/s",
            "req p50 ms",
            "req max ms",
            "notifications",
            "deliveries",
            "digest max ms*",
            "peak RSS before MB",
            "after MB",
        ],
        rows,
    )
    print("  * digest on the recipient's WebSocket, after the response of its request")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = base_parser(__doc__.split("\n\n")[0]).parse_args(sys.argv[1:] if argv is None else argv)
    results = [bench(kind, args.quick) for kind in backends(args.backend)]
    report(results)
    out = {"name": "batch_assign", "quick": args.quick, "results": results}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
