"""Profile leadpush under a benchmark's load: cProfile in every thread of the serving process.

By default each thread's profiler counts that thread's CPU time (time.thread_time), so time spent
waiting for the SQLite write lock or the network does not hide where the CPU goes; --wall counts
wall-clock time instead.

Starts leadpush (SQLite, all roles, as `leadpush serve` builds it) in a child process with a
profiler in the event-loop thread and in each worker thread (sync routes run in anyio's thread
pool, where a plain `python -m cProfile` sees nothing), drives one scenario from this process, then
stops the child, which merges the per-thread profiles and writes them. Prints the top functions.

    python -m benchmarks.profile_server assign [--seconds 10] [--clients 16]
    python -m benchmarks.profile_server batch [--leads 5000]
    python -m benchmarks.profile_server ws [--sockets 1000]
    python -m benchmarks.profile_server intake [--leads 5000] [--per-request 1]   # inbound, routed round robin
    python -m benchmarks.profile_server assign --backend postgres   # the api role only, a worker beside it

With --backend postgres the database is a fresh PostgreSQL one and Redis is configured, as
benchmarks.common.deployment("postgres") builds them; the profiled child runs the api role only and
a separate (unprofiled) worker process runs beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import signal
import sys
import threading
import time
from pathlib import Path

from benchmarks.common import (
    PYTHON,
    REDIS_URL,
    HttpConnection,
    Service,
    base_env,
    database,
    forget_redis_keys,
    free_port,
    host_port,
    leadpush_service,
    log,
    make_leads,
    make_team,
    migrate,
    scratch_dir,
)


def serve(port: int, out: str, cpu: bool, roles: frozenset[str]) -> None:
    """The child: leadpush with a profiler per thread; on SIGTERM, write the merged profile."""
    import uvicorn

    from leadpush.app import create_app
    from leadpush.config import Settings
    from leadpush.context import AppContext

    profilers: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start_thread_profiler(*_: object) -> None:
        sys.setprofile(None)
        prof = cProfile.Profile(time.thread_time) if cpu else cProfile.Profile()
        with lock:
            profilers.append(prof)
        prof.enable()

    threading.setprofile(start_thread_profiler)
    settings = Settings()
    app = create_app(AppContext.from_settings(settings), roles=roles)
    main = cProfile.Profile(time.thread_time) if cpu else cProfile.Profile()
    profilers.append(main)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))

    def finish(*_: object) -> None:
        server.should_exit = True

    signal.signal(signal.SIGTERM, finish)
    main.enable()
    server.run()
    main.disable()
    with lock:
        for prof in profilers:
            prof.disable()
        stats = pstats.Stats(profilers[0])
        for prof in profilers[1:]:
            try:
                stats.add(prof)
            except TypeError:  # a thread that never ran anything
                pass
    stats.dump_stats(out)


async def drive_assign(url: str, token: str, leads: list[int], sales: list[int], seconds: float, clients: int) -> int:
    from benchmarks.assign_api import assign_load

    row = await assign_load([url], token, leads, sales, clients, seconds, 1.0)
    log(f"assign: {row['n']} requests, p50 {row['p50']} ms, {row['throughput']}/s")
    return row["n"]


async def drive_batch(url: str, token: str, leads: list[int], to: int) -> int:
    conn = HttpConnection(*host_port(url))
    started = time.perf_counter()
    for i in range(0, len(leads), 1000):
        status, _ = await conn.request(
            "POST", "/api/customers/batch-assign", {"customerIds": leads[i : i + 1000], "assignedTo": to}, token
        )
        assert status == 200, status
    log(f"batch: {len(leads)} leads in {time.perf_counter() - started:.2f} s")
    conn.close()
    return len(leads)


async def drive_ws(ws_url: str, url: str, manager, sales, leads: list[int]) -> int:  # noqa: ANN001
    from benchmarks.ws_5000 import open_all
    from benchmarks.wsclient import Listener

    listeners, seconds, failed = await open_all([lambda u=u: Listener(ws_url, u.token).open() for u in sales])
    log(f"ws: {len(listeners)} sockets in {seconds:.1f} s ({failed} failed)")
    conn = HttpConnection(*host_port(url))
    for lead, user in zip(leads, sales, strict=False):
        await conn.request("PATCH", f"/api/customers/{lead}/assign", {"assignedTo": user.id}, manager.token)
    await asyncio.sleep(1)
    conn.close()
    await asyncio.gather(*(listener.close() for listener in listeners), return_exceptions=True)
    return len(listeners)


async def drive_intake(url: str, intake, count: int) -> int:  # noqa: ANN001 - intake_routing.Intake
    conn = HttpConnection(*host_port(url))
    tag = os.urandom(3).hex()
    leads = [intake.lead(f"潮{tag}-{i}", f"137{i:08d}", f"p{tag}-{i}") for i in range(count)]
    started = time.perf_counter()
    for i in range(0, count, intake.max_per_request):
        status, body = await conn.request(
            "POST", intake.url_path, intake.body(leads[i : i + intake.max_per_request]), intake.token
        )
        assert status < 300, (status, str(body)[:300])
    log(f"intake: {count} leads through {intake.url_path} in {time.perf_counter() - started:.2f} s")
    conn.close()
    return count


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve(int(sys.argv[2]), sys.argv[3], sys.argv[4] == "cpu", frozenset(sys.argv[5].split(",")))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=("assign", "batch", "ws", "intake"))
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--leads", type=int, default=5000)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--per-request", type=int, help="intake: leads per request (default: all in one)")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("/tmp/leadpush-profile.prof"))
    parser.add_argument(
        "--wall", action="store_true", help="time by the wall clock (lock waits included) instead of each thread's CPU"
    )
    args = parser.parse_args()
    postgres = args.backend == "postgres"
    with scratch_dir() as workdir, database(args.backend, workdir) as url:
        migrate(url)
        env = {**base_env(), "LEADPUSH_DATABASE_URL": url}
        if postgres:
            env["LEADPUSH_REDIS_URL"] = REDIS_URL
            env["LEADPUSH_REDIS_PREFIX"] = f"lp-profile-{os.urandom(4).hex()}"
        port = free_port()
        service = Service(
            "profiled",
            [
                PYTHON,
                "-m",
                "benchmarks.profile_server",
                "_serve",
                str(port),
                str(args.out),
                "wall" if args.wall else "cpu",
                "api" if postgres else "api,worker,scheduler",
            ],
            env,
            port,
            workdir,
        )
        # PostgreSQL: the worker delivers what the api process's requests queue, in its own process.
        others = [leadpush_service(env, workdir, ("worker",), "leadpush-worker")] if postgres else []
        manager, sales = make_team(url, args.sockets if args.scenario == "ws" else 20)
        leads = make_leads(url, args.leads if args.scenario == "batch" else 2000)
        for other in others:
            other.start()
        service.start()
        try:
            if args.scenario == "assign":
                asyncio.run(
                    drive_assign(service.url, manager.token, leads, [u.id for u in sales], args.seconds, args.clients)
                )
            elif args.scenario == "batch":
                asyncio.run(drive_batch(service.url, manager.token, leads, sales[0].id))
            elif args.scenario == "intake":
                from types import SimpleNamespace

                from benchmarks.common import make_users
                from benchmarks.intake_routing import setup

                (admin,) = make_users(url, [{"name": "管理员", "role": "admin", "team": None}])
                intake = setup(SimpleNamespace(api=[service]), admin, sales, "inbound", args.per_request)
                asyncio.run(drive_intake(service.url, intake, args.leads))
            else:
                asyncio.run(drive_ws(service.ws_url, service.url, manager, sales, leads[: len(sales)]))
        finally:
            service.stop()
            for other in others:
                other.stop()
            if postgres:
                forget_redis_keys(env["LEADPUSH_REDIS_PREFIX"])
    stats = pstats.Stats(str(args.out))
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)
    print(f"profile written to {args.out} (pid {os.getpid()})")


if __name__ == "__main__":
    main()
