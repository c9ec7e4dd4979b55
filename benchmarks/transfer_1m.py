"""Automatic transfer over 1,000,000 leads (issue 5), on SQLite and on PostgreSQL.

Bulk-loads users and leads straight into a fresh database (executemany / COPY) under one rule
("no follow-up within 48 h of assignment → back to the public pool"), with each lead's stored
deadline set exactly as leadpush.transfer.deadlines would set it, and a configurable share of the
leads past their deadline. Then, each in a fresh child process so that its peak RSS is its own:

- `earliest_pending`: the scheduler's "when is the next deadline" query;
- a dry run of `run_transfer` (counts what would move, moves nothing; also under tracemalloc);
- one real `run_transfer(ctx, "manual")`: time, leads examined / moved, peak memory;
- `recompute_all` after the rule's threshold changes (48 h → 72 h), which is what saving a rule does.

    python -m benchmarks.transfer_1m [--quick] [--leads N] [--due-share 0.01] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks.common import (
    PYTHON,
    ROOT,
    backends,
    base_env,
    base_parser,
    database,
    log,
    migrate,
    print_table,
    proc_status,
    scratch_dir,
    write_json,
)

THRESHOLD_HOURS = 48.0
CHANGED_THRESHOLD_HOURS = 72.0
TEAMS = 20
CHUNK = 50_000
COLUMNS = (
    "id",
    "name",
    "phone",
    "source",
    "status",
    "note",
    "owner_id",
    "created_by",
    "assigned_at",
    "last_follow_up_at",
    "transfer_due_at",
    "transfer_warn_at",
    "transfer_rule_id",
    "transfer_warned_for",
    "version",
    "created_at",
    "updated_at",
)
SOURCES = ("抖音", "百度", "官网", "转介绍", "展会", "微信")


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def naive(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None)


def sqlite_text(dt: datetime | None) -> str | None:
    # SQLAlchemy's SQLite DATETIME storage format (compared as text, so it must match exactly).
    return None if dt is None else naive(dt).strftime("%Y-%m-%d %H:%M:%S.%f")


def lead_rows(n: int, users: list[int], rule_id: int, now: datetime, due_share: float, pool_share: float, seed: int):
    """Yield chunks of lead tuples (datetimes aware UTC). Exactly round(n * due_share) are past due."""
    rng = random.Random(seed)
    span = timedelta(hours=THRESHOLD_HOURS)
    due_left = round(n * due_share)
    created = now - timedelta(days=30)
    chunk: list[tuple[Any, ...]] = []
    for i in range(1, n + 1):
        owner = None
        assigned = followed = due = rule = None
        status = "new"
        # Past-due leads are spread evenly over the id range, as they would be in a real table.
        make_due = due_left > 0 and rng.random() < due_left / (n - i + 1)
        if make_due:
            due_left -= 1
            owner = rng.choice(users)
            assigned = now - span - timedelta(seconds=rng.uniform(60, 12 * 3600))
        elif rng.random() >= pool_share:
            owner = rng.choice(users)
            assigned = now - timedelta(seconds=rng.uniform(0, (THRESHOLD_HOURS - 1) * 3600))
            roll = rng.random()
            if roll < 0.30:  # followed up since assignment: the rule no longer applies
                followed = assigned + timedelta(seconds=rng.uniform(60, 3600))
                status = "following"
            elif roll < 0.32:  # won: exempt
                status = "won"
        if owner is not None and followed is None and status != "won":
            due, rule = assigned + span, rule_id
        chunk.append(
            (
                i,
                f"客户{i}",
                f"139{i:08d}",
                SOURCES[i % len(SOURCES)],
                status,
                "",
                owner,
                None,
                assigned,
                followed,
                due,
                None,
                rule,
                None,
                1,
                created,
                assigned or created,
            )
        )
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def load(url: str, n: int, n_users: int, due_share: float, pool_share: float, now: datetime) -> dict[str, Any]:
    from leadpush.db import Database
    from leadpush.teams.models import Team
    from leadpush.transfer.models import TransferRule

    started = time.perf_counter()
    db = Database(url)
    with db.write() as session:
        session.add_all(Team(name=f"T{t}") for t in range(TEAMS))  # users.team names one (a foreign key)
        rule = TransferRule(
            name="48 小时未跟进退回公海",
            team=None,
            condition="no_follow_up_after_assign",
            threshold_hours=THRESHOLD_HOURS,
            exempt_statuses=["won"],
            action="public_pool",
            warn_before_hours=None,
            enabled=True,
        )
        session.add(rule)
        session.flush()
        rule_id = rule.id
    db.dispose()
    user_rows = [
        (i, f"销售{i}", "sales", f"T{i % TEAMS}", None, None, None, True, naive(now)) for i in range(1, n_users + 1)
    ]
    users = [r[0] for r in user_rows]
    if url.startswith("sqlite"):
        _load_sqlite(url, user_rows, lead_rows(n, users, rule_id, now, due_share, pool_share, 1))
    else:
        _load_postgres(url, user_rows, lead_rows(n, users, rule_id, now, due_share, pool_share, 1))
    return {"seconds": round(time.perf_counter() - started, 1), "rule_id": rule_id}


def _load_sqlite(url: str, user_rows, chunks) -> None:  # noqa: ANN001
    import sqlite3

    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO users (id, name, role, team, wechat_openid, wecom_userid, capacity, active, created_at)"
        " VALUES (?,?,?,?,?,?,?,?,?)",
        [(*r[:8], sqlite_text(r[8].replace(tzinfo=UTC))) for r in user_rows],
    )
    sql = f"INSERT INTO customers ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    for chunk in chunks:
        conn.executemany(sql, [tuple(sqlite_text(v) if isinstance(v, datetime) else v for v in row) for row in chunk])
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def _load_postgres(url: str, user_rows, chunks) -> None:  # noqa: ANN001
    import psycopg

    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            with cur.copy(
                "COPY users (id, name, role, team, wechat_openid, wecom_userid, capacity, active, created_at)"
                " FROM STDIN"
            ) as copy:
                for row in user_rows:
                    copy.write_row(row)
            with cur.copy(f"COPY customers ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for chunk in chunks:
                    for row in chunk:
                        copy.write_row(tuple(naive(v) if isinstance(v, datetime) else v for v in row))
            cur.execute("SELECT setval('users_id_seq', (SELECT max(id) FROM users))")
            cur.execute("SELECT setval('customers_id_seq', (SELECT max(id) FROM customers))")
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def check_consistency(url: str, now: datetime, sample: int = 2000) -> dict[str, int]:
    """Compare stored deadlines with leadpush's own deadline_for on a random sample of leads."""
    from sqlalchemy import select

    from leadpush.db import Database
    from leadpush.leads.models import Customer
    from leadpush.transfer.deadlines import deadline_for, enabled_rules
    from leadpush.users.models import User

    db = Database(url)
    mismatched = 0
    with db.read() as session:
        rules = enabled_rules(session)
        teams = dict(session.execute(select(User.id, User.team)).all())
        ids = random.Random(2).sample(
            range(1, session.scalar(select(Customer.id).order_by(Customer.id.desc())) + 1), sample
        )
        for customer in session.scalars(select(Customer).where(Customer.id.in_(ids))):
            d = deadline_for(rules, customer, teams.get(customer.owner_id))
            want = (d.due_at if d else None, d.rule.id if d else None)
            if want != (customer.transfer_due_at, customer.transfer_rule_id):
                mismatched += 1
        due = session.scalar(
            select(Customer.id).where(Customer.owner_id.is_not(None), Customer.transfer_due_at <= now).limit(1)
        )
    db.dispose()
    return {"sampled": sample, "mismatched": mismatched, "any_due": int(due is not None)}


# --------------------------------------------------------------------------------------
# Measuring (in a child process per operation)
# --------------------------------------------------------------------------------------


def recompute_with_limit(ctx: Any, limit: float) -> dict[str, Any]:
    """Change the rule's threshold, then recompute_all; past `limit` seconds, report the rate so far.

    Progress is counted by wrapping refresh_deadlines (which recompute_all calls once per chunk) in
    this child process only. A stopped recompute leaves the database half done; it is the last step.
    """
    import threading

    from sqlalchemy import update

    from leadpush.transfer import deadlines
    from leadpush.transfer.models import TransferRule

    with ctx.db.write() as session:
        session.execute(update(TransferRule).values(threshold_hours=CHANGED_THRESHOLD_HOURS))
    processed = [0]
    original = deadlines.refresh_deadlines

    def counting(session, customers, now, rules=None):  # noqa: ANN001, ANN202
        original(session, customers, now, rules)
        processed[0] += len(customers)

    deadlines.refresh_deadlines = counting
    done: dict[str, Any] = {}
    started = time.perf_counter()
    worker = threading.Thread(target=lambda: done.update(touched=deadlines.recompute_all(ctx.db, ctx.clock.now())))
    worker.daemon = True
    worker.start()
    worker.join(timeout=limit if limit > 0 else None)
    elapsed = time.perf_counter() - started
    if worker.is_alive():
        return {"touched": processed[0], "partial": True, "limit_seconds": limit, "elapsed": elapsed}
    return {"touched": done["touched"], "partial": False, "elapsed": elapsed}


def measure(url: str, op: str, use_tracemalloc: bool, profile: str | None = None, limit: float = 0) -> dict[str, Any]:
    import leadpush.models  # noqa: F401  (every table mapped, as in the app: the recompute's bulk UPDATE sorts them)
    from leadpush.config import Settings
    from leadpush.context import AppContext
    from leadpush.transfer.deadlines import earliest_pending
    from leadpush.transfer.engine import run_transfer

    ctx = AppContext.from_settings(Settings(database_url=url))
    # Open the pool and warm the import of everything the op touches, outside the timing.
    with ctx.db.read() as session:
        earliest_pending(session)
    base_rss = proc_status(os.getpid())["VmHWM"]
    if use_tracemalloc:
        tracemalloc.start()
    out: dict[str, Any] = {"op": op}
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started = time.perf_counter()
    if op == "earliest":
        times = []
        value = None
        for _ in range(5):
            t0 = time.perf_counter()
            with ctx.db.read() as session:
                value = earliest_pending(session)
            times.append(time.perf_counter() - t0)
        out.update(
            value=str(value), ms_min=min(times) * 1000, ms_max=max(times) * 1000, ms_median=sorted(times)[2] * 1000
        )
    elif op in ("dry", "run"):
        report = run_transfer(ctx, "manual", dry_run=op == "dry")
        out.update(examined=report.examined, moved=report.moved, warned=report.warned, failed=report.failed)
    elif op == "recompute":
        out.update(recompute_with_limit(ctx, limit))
    elif op == "count":
        from sqlalchemy import func, select

        from leadpush.leads.models import Customer
        from leadpush.notify.models import Delivery, Notification

        with ctx.db.read() as session:
            out["leads"] = session.scalar(select(func.count()).select_from(Customer))
            out["owned"] = session.scalar(select(func.count()).where(Customer.owner_id.is_not(None)))
            out["due"] = session.scalar(
                select(func.count()).where(Customer.owner_id.is_not(None), Customer.transfer_due_at <= ctx.clock.now())
            )
            out["notifications"] = session.scalar(select(func.count()).select_from(Notification))
            out["deliveries"] = session.scalar(select(func.count()).select_from(Delivery))
    out["seconds"] = time.perf_counter() - started
    if profiler is not None and profile:
        profiler.disable()
        profiler.dump_stats(profile)
    if use_tracemalloc:
        out["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    # Peak RSS of this process. VmHWM rather than getrusage's ru_maxrss: on Linux a child's ru_maxrss
    # starts at its parent's RSS at fork time, which would hide a small run behind the loader's peak.
    out["maxrss_mb"] = proc_status(os.getpid())["VmHWM"] / 1024
    out["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["maxrss_before_mb"] = base_rss / 1024
    ctx.db.dispose()
    return out


def run_child(
    url: str, op: str, use_tracemalloc: bool = False, limit: float = 0, timeout: float = 3600
) -> dict[str, Any]:
    args = [PYTHON, "-m", "benchmarks.transfer_1m", "_measure", url, op, "--limit", str(limit)]
    args += ["--tracemalloc"] if use_tracemalloc else []
    done = subprocess.run(args, env=base_env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{op} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_backend(kind: str, n: int, n_users: int, due_share: float, pool_share: float, opts: Any) -> dict[str, Any]:
    with scratch_dir() as workdir, database(kind, workdir) as url:
        migrate(url)
        now = datetime.now(UTC)
        log(f"{kind}: loading {n:,} leads, {n_users:,} users ({due_share:.2%} past due, {pool_share:.0%} in the pool)")
        loaded = load(url, n, n_users, due_share, pool_share, now)
        log(f"{kind}: loaded in {loaded['seconds']} s")
        result: dict[str, Any] = {"backend": kind, "leads": n, "users": n_users, "load_seconds": loaded["seconds"]}
        result["consistency"] = check_consistency(url, datetime.now(UTC))
        result["before"] = run_child(url, "count")
        result["earliest_before"] = run_child(url, "earliest")
        log(f"{kind}: earliest_pending {result['earliest_before']['ms_median']:.2f} ms")
        if opts.dry_run:
            result["dry_run"] = run_child(url, "dry")
            log(f"{kind}: dry run {result['dry_run']['seconds']:.1f} s")
        result["run"] = run_child(url, "run", use_tracemalloc=opts.tracemalloc)
        r = result["run"]
        log(f"{kind}: run {r['seconds']:.1f} s, examined {r['examined']:,}, moved {r['moved']:,}, failed {r['failed']}")
        result["after"] = run_child(url, "count")
        result["earliest_after"] = run_child(url, "earliest")
        result["recompute"] = rc = run_child(url, "recompute", limit=opts.recompute_limit)
        rc["rate"] = rc["touched"] / rc["elapsed"] if rc["elapsed"] else 0.0
        rc["owned"] = result["after"]["owned"]
        rc["projected_seconds"] = rc["owned"] / rc["rate"] if rc["rate"] else None
        log(
            f"{kind}: recompute_all {rc['touched']:,} leads in {rc['elapsed']:.1f} s"
            + (
                f" (stopped at the limit; all {rc['owned']:,} would take ~{rc['projected_seconds']:.0f} s)"
                if rc["partial"]
                else ""
            )
        )
        if kind == "sqlite":
            result["db_file_mb"] = round(os.path.getsize(url.removeprefix("sqlite:///")) / 2**20, 1)
        return result


def report(results: list[dict[str, Any]]) -> None:
    rows = []
    for r in results:
        run = r["run"]
        rows.append(
            [
                r["backend"],
                r["leads"],
                r["before"]["due"],
                run["examined"],
                run["moved"],
                run["failed"],
                run["seconds"],
                run["moved"] / run["seconds"] if run["seconds"] else 0.0,
                run["maxrss_mb"],
                run["maxrss_mb"] - run["maxrss_before_mb"],
                run.get("tracemalloc_peak_mb"),
            ]
        )
    print_table(
        "One automatic-transfer run (run_transfer, manual trigger)",
        [
            "backend",
            "leads",
            "due",
            "examined",
            "moved",
            "failed",
            "s",
            "moved/s",
            "maxrss MB",
            "+MB in run",
            "tracemalloc MB",
        ],
        rows,
    )
    rows = []
    for r in results:
        rc = r["recompute"]
        rows.append(
            [
                r["backend"],
                r["earliest_before"]["ms_median"],
                r["earliest_before"]["ms_max"],
                r["earliest_after"]["ms_median"],
                r.get("dry_run", {}).get("seconds"),
                rc["touched"],
                rc["elapsed"],
                rc["rate"],
                rc["projected_seconds"],
                r["load_seconds"],
            ]
        )
    print_table(
        "Scheduler query (earliest_pending) and recompute_all after a rule change",
        [
            "backend",
            "earliest ms",
            "max ms",
            "after run ms",
            "dry run s",
            "recomputed",
            "in s",
            "leads/s",
            "all owned s",
            "load s",
        ],
        rows,
    )
    for r in results:
        c = r["consistency"]
        print(
            f"  {r['backend']}: stored deadlines of {c['sampled']} sampled leads vs deadline_for: {c['mismatched']} differ"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_measure":
        profile = argv[argv.index("--profile") + 1] if "--profile" in argv else None
        limit = float(argv[argv.index("--limit") + 1]) if "--limit" in argv else 0.0
        print(json.dumps(measure(argv[1], argv[2], "--tracemalloc" in argv, profile, limit)), flush=True)
        # A recompute stopped at its limit is still running in a thread: leave without waiting for it.
        os._exit(0)
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=None, help="number of leads (default 1,000,000; quick 50,000)")
    parser.add_argument("--users", type=int, default=1000, help="salespeople owning them")
    parser.add_argument("--due-share", type=float, default=0.01, help="share of all leads past their deadline")
    parser.add_argument("--pool-share", type=float, default=0.10, help="share of leads in the public pool")
    parser.add_argument("--dry-run", action="store_true", help="also time a dry run")
    parser.add_argument("--tracemalloc", action="store_true", help="run under tracemalloc (slower) and report its peak")
    parser.add_argument(
        "--recompute-limit", type=float, default=60.0, help="stop recompute_all after this many seconds (0 = never)"
    )
    args = parser.parse_args(argv)
    n = args.leads or (50_000 if args.quick else 1_000_000)
    results = [
        bench_backend(kind, n, args.users, args.due_share, args.pool_share, args) for kind in backends(args.backend)
    ]
    report(results)
    out = {"name": "transfer_1m", "quick": args.quick, "results": results}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
