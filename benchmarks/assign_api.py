"""Assignment API latency and throughput: `PATCH /api/customers/{id}/assign` at 1, 16 and 64 clients.

A manager reassigns leads among 20 salespeople of the team as fast as each client can: every
request changes the owner (each client picks the next salesperson of its rotation who is not the lead's
owner; the owners are remembered across levels), so each one writes the owner, the history row, two notifications
(`customer_assigned` to the new owner, `customer_recycled` to the previous one) and their in-app
deliveries (written sent: the committing api process pushes them). Each client has its own keep-alive connection and its
own leads (no two clients touch the same lead). Measured against two floors driven by the same client
in the same run: the bare-update floor (benchmarks.floor_fastapi: FastAPI + SQLite, an owner column
only) and, per database, the rows floor (benchmarks.floor_rows: the same FastAPI route writing the rows
an assignment writes — owner, history, two notifications with their `prev_id` under the same
per-recipient lock, their in-app deliveries — into leadpush's own schema in one transaction with the
bare driver, sqlite3 or psycopg; on PostgreSQL also without that lock, "rows floor postgres unlocked", to
show what the lock costs). Server CPU per request is the servers' user+system time over the
window divided by the requests (PostgreSQL's and Redis's own CPU not included).

    python -m benchmarks.assign_api [--quick] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks.common import (
    HttpConnection,
    Service,
    backends,
    base_parser,
    database,
    deployment,
    floor_api_service,
    floor_rows_service,
    host_port,
    ledger_counts,
    log,
    make_leads,
    make_team,
    migrate,
    ms_stats,
    print_table,
    scratch_dir,
    write_json,
)

LEVELS = (1, 16, 64)
LEADS_PER_CLIENT = 20
SALES = 20


async def assign_load(
    targets: list[str],
    token: str | None,
    lead_ids: list[int],
    sales_ids: list[int],
    concurrency: int,
    duration: float,
    warmup: float,
    services: list[Service] | None = None,
    owner_of: dict[int, int] | None = None,
) -> dict[str, Any]:
    """`concurrency` clients reassigning their own leads for warmup + duration seconds.

    `owner_of` (lead → owner, kept by the caller across levels) makes every request a change of owner: a
    request naming the lead's owner is answered "unchanged" and writes nothing (until issue 17's seventh round the rotation
    named each lead's owner again from its second pass on, so most of a level measured those)."""
    owner_of = {} if owner_of is None else owner_of
    answered = 0  # every 200, warm-up included: what the ledger's count is compared with
    latencies: list[float] = []
    by_target: dict[str, list[float]] = {t: [] for t in targets}
    statuses: dict[int, int] = {}
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration
    cpu_before: list[float] = []

    async def client(index: int) -> None:
        nonlocal answered
        target = targets[index % len(targets)]
        host, port = host_port(target)
        conn = HttpConnection(host, port)
        mine = lead_ids[index::concurrency] or lead_ids[:1]
        owners = itertools.cycle(sales_ids[index % len(sales_ids) :] + sales_ids[: index % len(sales_ids)])
        leads = itertools.cycle(mine)
        try:
            while True:
                now = time.perf_counter()
                if now >= stop_at:
                    return
                lead, owner = next(leads), next(owners)
                if owner == owner_of.get(lead):
                    owner = next(owners)
                t0 = time.perf_counter()
                status, _ = await conn.request("PATCH", f"/api/customers/{lead}/assign", {"assignedTo": owner}, token)
                t1 = time.perf_counter()
                if status == 200:
                    owner_of[lead] = owner
                    answered += 1
                if t0 >= measure_from and t1 <= stop_at:
                    latencies.append(t1 - t0)
                    by_target[target].append(t1 - t0)
                    statuses[status] = statuses.get(status, 0) + 1
        finally:
            conn.close()

    async def cpu_mark() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        cpu_before.extend(s.cpu() for s in services or [])

    tasks = [asyncio.create_task(client(i)) for i in range(concurrency)]
    marker = asyncio.create_task(cpu_mark())
    await asyncio.gather(*tasks, marker)
    cpu_each = [s.cpu() - before for s, before in zip(services or [], cpu_before, strict=True)]
    cpu_used = sum(cpu_each) if services else None
    ok = statuses.get(200, 0)
    return {
        "concurrency": concurrency,
        **ms_stats(latencies),
        "throughput": round(len(latencies) / duration, 1),
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": len(latencies) - ok,
        "server_cpu_ms_per_request": round(cpu_used / len(latencies) * 1000, 2) if cpu_used and latencies else None,
        # Each process's share (api processes, then worker and scheduler): where the milliseconds go.
        "cpu_ms_by_process": {
            s.name: round(c / len(latencies) * 1000, 2) for s, c in zip(services or [], cpu_each, strict=True)
        }
        if latencies
        else {},
        # Several api processes: each one's own figures (its clients keep their connection to it).
        "by_target": {t: ms_stats(v) for t, v in by_target.items()} if len(targets) > 1 else {},
        "answered": answered,
    }


def run_levels(
    label: str,
    targets: list[str],
    token: str | None,
    leads: list[int],
    sales: list[int],
    quick: bool,
    services,
    notifications: Callable[[], int] | None = None,
) -> list[dict[str, Any]]:
    """Each level in turn. `notifications` (leadpush): the ledger's count, to show each request wrote the
    two notifications of a change (one for a lead's first owner)."""
    duration, warmup = (3.0, 1.0) if quick else (10.0, 2.0)
    rows = []
    owner_of: dict[int, int] = {}
    for c in LEVELS:
        before = notifications() if notifications else 0
        row = asyncio.run(assign_load(targets, token, leads, sales, c, duration, warmup, services, owner_of))
        if notifications:
            row["notifications_per_request"] = round((notifications() - before) / max(1, row["answered"]), 2)
        row["target"] = label
        apart = "".join(f"; {t}: p50 {v['p50']} p99 {v['p99']} ms" for t, v in row["by_target"].items())
        if "notifications_per_request" in row:
            apart += f"; notifications/request {row['notifications_per_request']}"
        apart += "; CPU ms/req " + ", ".join(f"{k} {v}" for k, v in row["cpu_ms_by_process"].items())
        log(
            f"{label}: {c} clients: p50 {row['p50']} ms, p99 {row['p99']} ms, {row['throughput']}/s, errors {row['errors']}"
            + apart
        )
        rows.append(row)
    return rows


def bench_leadpush(
    kind: str, quick: bool, n_sales: int = SALES, server_env: dict[str, str] | None = None
) -> dict[str, Any]:
    with deployment(kind, server_env) as dep:
        manager, sales = make_team(dep.db_url, n_sales)
        leads = make_leads(dep.db_url, max(LEVELS) * LEADS_PER_CLIENT)
        rows = run_levels(
            kind,
            [s.url for s in dep.api],
            manager.token,
            leads,
            [u.id for u in sales],
            quick,
            dep.services,
            lambda: ledger_counts(dep.db_url)["notifications"],
        )
        described = dep.describe() + "".join(f", {k}={v}" for k, v in sorted((server_env or {}).items()))
        return {"backend": kind, "deployment": described, "salespeople": n_sales, "levels": rows}


def bench_floor(quick: bool) -> dict[str, Any]:
    with scratch_dir() as workdir:
        leads = max(LEVELS) * LEADS_PER_CLIENT
        floor = floor_api_service(workdir, leads).start()
        try:
            rows = run_levels(
                "floor", [floor.url], None, list(range(1, leads + 1)), list(range(1, SALES + 1)), quick, [floor]
            )
        finally:
            floor.stop()
    return {"backend": "floor", "deployment": "FastAPI + SQLite, owner column only", "levels": rows}


UNLOCKED = " unlocked"  # the rows floor without the per-recipient advisory lock (PostgreSQL)


def bench_floor_rows(kind: str, quick: bool, n_sales: int = SALES, ordering: str = "lock") -> dict[str, Any]:
    """The rows floor on `kind`: leadpush's migrated schema, the same team and leads, the bare driver;
    `ordering="none"`: without the advisory lock that orders each recipient's ids (what the lock costs)."""
    label = f"rows floor {kind}" + (UNLOCKED if ordering == "none" else "")
    with scratch_dir() as workdir, database(kind, workdir) as url:
        migrate(url)
        manager, sales = make_team(url, n_sales)
        leads = make_leads(url, max(LEVELS) * LEADS_PER_CLIENT)
        floor = floor_rows_service(workdir, url, manager.id, ordering).start()
        try:
            rows = run_levels(label, [floor.url], None, leads, [u.id for u in sales], quick, [floor])
        finally:
            floor.stop()
    driver = "sqlite3" if kind == "sqlite" else "psycopg"
    lock = ", no advisory lock" if ordering == "none" else ""
    return {
        "backend": label,
        "deployment": f"FastAPI + {driver}, an assignment's rows in one transaction{lock}",
        "levels": rows,
    }


def floor_rows_runs(kinds: list[str], quick: bool, n_sales: int) -> list[dict[str, Any]]:
    """The rows floor per database; on PostgreSQL also without the lock, so the table shows its cost."""
    runs = []
    for kind in kinds:
        runs.append(bench_floor_rows(kind, quick, n_sales))
        if kind == "postgres":
            runs.append(bench_floor_rows(kind, quick, n_sales, ordering="none"))
    return runs


def rows_floor_of(results: list[dict[str, Any]], backend: str) -> dict[int, dict[str, Any]]:
    """The rows floor's levels for a leadpush backend ("sqlite" → "rows floor sqlite"), by concurrency."""
    found = next((x["levels"] for x in results if x["backend"] == f"rows floor {backend}"), [])
    return {r["concurrency"]: r for r in found}


def report(results: list[dict[str, Any]]) -> None:
    floor = {r["concurrency"]: r for r in next((x["levels"] for x in results if x["backend"] == "floor"), [])}
    rows = []
    for result in results:
        is_floor = "floor" in result["backend"]
        rows_floor = rows_floor_of(results, result["backend"])
        for r in result["levels"]:
            f = floor.get(r["concurrency"])
            rf = rows_floor.get(r["concurrency"])
            rows.append(
                [
                    result["backend"],
                    r["concurrency"],
                    r["n"],
                    r["p50"],
                    r["p99"],
                    r["max"],
                    r["throughput"],
                    r["errors"],
                    r["server_cpu_ms_per_request"],
                    (r["p99"] / f["p99"]) if f and result["backend"] != "floor" else None,
                    (r["p99"] / rf["p99"]) if rf and not is_floor else None,
                    (f["throughput"] / r["throughput"])
                    if f and r["throughput"] and result["backend"] != "floor"
                    else None,
                ]
            )
    print_table(
        "PATCH /api/customers/{id}/assign",
        [
            "target",
            "clients",
            "n",
            "p50 ms",
            "p99 ms",
            "max ms",
            "req/s",
            "errors",
            "CPU ms/req",
            "p99 ×floor",
            "p99 ×rows floor",
            "floor/req/s",
        ],
        rows,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--sales", type=int, default=SALES, help="salespeople the leads rotate among")
    parser.add_argument("--no-floor", action="store_true", help="skip the floors")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="LEADPUSH_X=VALUE",
        help="a setting for the leadpush processes (repeatable), e.g. LEADPUSH_DELIVERY_CONCURRENCY=64",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    results = [] if args.no_floor else [bench_floor(args.quick)]
    if not args.no_floor:
        results += floor_rows_runs(list(backends(args.backend)), args.quick, args.sales)
    server_env = dict(item.split("=", 1) for item in args.server_env)
    results += [bench_leadpush(kind, args.quick, args.sales, server_env) for kind in backends(args.backend)]
    report(results)
    out = {"name": "assign_api", "quick": args.quick, "results": results}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
