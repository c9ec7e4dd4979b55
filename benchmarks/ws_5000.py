"""5,000 concurrent WebSocket connections in one leadpush process: memory per connection, fan-out.

5,000 salespeople each keep one `/ws` open on the same api process (permessage-deflate negotiated,
as browsers do). Reported: the time to connect them all, the server's RSS before and after
(→ memory per connection), then with every socket open:
- "idle push": single assignments one at a time, assign response → arrival;
- "fan-out burst": 1,000 leads assigned at once (64 concurrent HTTP clients), each to a different
  connected salesperson: per-message arrival after its response, and the whole burst's span (first
  request sent → last message arrived).
Floor: the bare `websockets` server with the same number of sockets: RSS per connection, one
broadcast to every socket (trigger → arrival at each socket), and a burst of 1,000 individual
relays. This process is also the only client of 5,000 sockets on a 2-core machine: the client's
own work is inside every arrival time. The api process holding the sockets also reports its garbage
collections (`leadpush_gc_*` on /metrics) from before the first socket opens to the end of the burst:
how many full (generation-2) collections ran and the longest one, each a pause of the whole process.

With --hold S the sockets then stay open S seconds more (heartbeats only), and with --close-share X that
share of them closes and the rest stay open S seconds more: each phase's full collections are reported
apart (the policy's thaws: what the collector does with thousands of sockets open and nothing happening,
and when many close). --server-src runs the leadpush processes from another checkout's src (an A/B with
the same client), --env passes settings to them.

Where a cross-process push's time goes (PostgreSQL): each is split at Redis by a tap in its own process
(benchmarks/hinttap.py: response → hint on Redis, hint → arrival), the client's own loop lag is reported,
--server-loop-lag measures every leadpush process's loop lag and its loop thread's CPU share
(benchmarks/looplag), --listener-process reads the sockets in a process of their own
(benchmarks/wsclient_proc.py), and --requests-elsewhere sends every request to the api process that holds no
socket.

    python -m benchmarks.ws_5000 [--quick] [--sockets N] [--backend sqlite|postgres|both] [--gc-freeze off]
        [--no-floor] [--hold S] [--close-share X] [--server-src DIR] [--env LEADPUSH_X=V ...]
        [--server-loop-lag] [--listener-process] [--requests-elsewhere]
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from benchmarks.common import (
    HttpConnection,
    backends,
    base_env,
    base_parser,
    deployment,
    floor_ws_service,
    host_port,
    log,
    make_leads,
    make_team,
    ms_stats,
    print_table,
    raise_nofile,
    scratch_dir,
    write_json,
)
from benchmarks.wsclient import Listener

CONNECT_CONCURRENCY = 100
HTTP_CLIENTS = 64


async def open_all(factories, concurrency: int = CONNECT_CONCURRENCY) -> tuple[list[Any], float, int]:  # noqa: ANN001
    sem = asyncio.Semaphore(concurrency)
    opened: list[Any] = []
    failed = 0

    async def one(factory) -> None:  # noqa: ANN001
        nonlocal failed
        async with sem:
            try:
                opened.append(await factory())
            except Exception:  # noqa: BLE001
                failed += 1

    started = time.perf_counter()
    await asyncio.gather(*(one(f) for f in factories))
    return opened, time.perf_counter() - started, failed


def gc_figures(url: str) -> dict[str, Any]:
    """The process's garbage-collection counters from its /metrics (generation 2 and the frozen objects)."""
    text = httpx.get(url + "/metrics", timeout=30).text

    def value(name: str) -> float:
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    def buckets(name: str) -> dict[float, float]:
        pattern = rf'^{name}_bucket\{{generation="2",le="([^"+]+)"\}} (\S+)$'
        return {float(le): float(n) for le, n in re.findall(pattern, text, re.M)}

    return {
        "collections": value('leadpush_gc_pause_seconds_count{generation="2"}'),
        "seconds": value('leadpush_gc_pause_seconds_sum{generation="2"}'),
        "longest": value('leadpush_gc_pause_max_seconds{generation="2"}'),
        "frozen": value("leadpush_gc_frozen_objects"),
        "thaws": value("leadpush_gc_thaws_total"),
        "garbage": value("leadpush_gc_frozen_garbage_objects"),
        "recounts": value("leadpush_gc_frozen_recounts_total"),
        "recount_max": value("leadpush_gc_frozen_recount_max_seconds"),
        "buckets": buckets("leadpush_gc_pause_seconds"),
        "cpu_buckets": buckets("leadpush_gc_pause_cpu_seconds"),
    }


def cpu_longest_between(before: dict[str, Any], after: dict[str, Any]) -> str | None:
    """The longest gen-2 pause's CPU time between two readings: "≤ bound" of the CPU histogram."""
    ran = after["collections"] - before["collections"]
    if ran <= 0:
        return None
    holds_all = [le for le, n in after["cpu_buckets"].items() if n - before["cpu_buckets"].get(le, 0) >= ran]
    return f"≤ {min(holds_all) * 1000:g}" if holds_all else f"> {max(after['cpu_buckets']) * 1000:g}"


def longest_between(before: dict[str, Any], after: dict[str, Any]) -> str | None:
    """The longest gen-2 pause between two readings, in ms: exact when it set the process's record,
    else "≤ bound" of the smallest histogram bucket that holds every one of them (None: none ran)."""
    ran = after["collections"] - before["collections"]
    if ran <= 0:
        return None
    if after["longest"] > before["longest"]:
        return f"{after['longest'] * 1000:.1f}"
    holds_all = [le for le, n in after["buckets"].items() if n - before["buckets"].get(le, 0) >= ran]
    return f"≤ {min(holds_all) * 1000:g}" if holds_all else f"> {max(after['buckets']) * 1000:g}"


def histogram_between(before: dict[str, Any], after: dict[str, Any], key: str = "buckets") -> dict[str, int]:
    """Gen-2 pauses between two readings by wall-time bucket: {"≤ 50": n, ..., "> 2500": n} (empty ones left out)."""
    out, below = {}, 0
    for le in sorted(after[key]):
        cumulative = after[key][le] - before[key].get(le, 0)
        if cumulative > below:
            out[f"≤ {le * 1000:g}"] = int(cumulative - below)
        below = cumulative
    rest = after["collections"] - before["collections"] - below
    if rest > 0:
        out[f"> {max(after[key]) * 1000:g}"] = int(rest)
    return out


def gc_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {
        "pauses_ms": histogram_between(before, after),
        "full_collections": int(after["collections"] - before["collections"]),
        "full_seconds": round(after["seconds"] - before["seconds"], 3),
        "longest_full_ms": longest_between(before, after),
        "longest_full_cpu_ms": cpu_longest_between(before, after),
        "frozen_objects": int(after["frozen"]),
        "thaws": int(after["thaws"] - before["thaws"]),
        "frozen_garbage_estimate": int(after["garbage"]),
        # Exact counts of the frozen objects (each a stop of the process, outside the gc pauses).
        "recounts": int(after["recounts"] - before["recounts"]),
        "recount_longest_ms_so_far": round(after["recount_max"] * 1000, 1),
    }


class RemoteListener:
    """One socket held by the listener process: `expect` as benchmarks.wsclient.Listener's."""

    def __init__(self, user_id: int, owner: ProcessListeners) -> None:
        self.hello = {"data": {"userId": user_id}}
        self.user_id = user_id
        self.owner = owner
        self.closed_with: int | None = None

    def expect(self, key: Any) -> asyncio.Future[float]:
        return self.owner.expect(self.user_id, key)

    async def close(self) -> None:
        return None


class ProcessListeners:
    """The sockets in a process of their own (benchmarks.wsclient_proc): arrival times are stamped there."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.waiting: dict[Any, asyncio.Future[float]] = {}
        self.arrived: dict[Any, float] = {}
        self.answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> ProcessListeners:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.wsclient_proc",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
            limit=1 << 26,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            item = json.loads(line)
            if "a" in item:
                uid, kind, cid, now = item["a"]
                key = (uid, (kind, cid))
                fut = self.waiting.pop(key, None)
                if fut is not None and not fut.done():
                    fut.set_result(now)
                else:
                    self.arrived[key] = now
            else:
                self.answers.put_nowait(item["r"])

    async def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        return await self.answers.get()

    def expect(self, user_id: int, key: Any) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if (user_id, key) in self.arrived:
            fut.set_result(self.arrived.pop((user_id, key)))
        else:
            self.waiting[(user_id, key)] = fut
        return fut

    async def open(self, url: str, tokens: list[str]) -> tuple[list[RemoteListener], float, int]:
        got = await self.ask(op="open", url=url, tokens=tokens)
        return [RemoteListener(uid, self) for uid in got["users"]], got["seconds"], got["failed"]

    async def close(self) -> list[int]:
        got = await self.ask(op="close")
        assert self.proc is not None
        await self.proc.wait()
        return got["closed_with"]


async def loop_lag(samples: list[float], every: float = 0.001) -> None:
    """Append how late each `every`-second sleep of this event loop wakes up, until cancelled."""
    while True:
        asked = time.perf_counter()
        await asyncio.sleep(every)
        samples.append(time.perf_counter() - asked - every)


def server_lags(path: Path, start: float, end: float) -> dict[str, Any]:
    """What the loop-lag probe (benchmarks/looplag) of a server process wrote between two perf_counter()
    times: the lag statistics, and the share of that time its loop thread spent on a CPU (its own work; the
    rest of the lag is waiting for the interpreter lock or for a core)."""
    rows = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
    inside = [(float(t), float(lag), float(cpu)) for t, lag, cpu in rows if start <= float(t) <= end]
    out: dict[str, Any] = ms_stats([lag for _, lag, _ in inside])
    if len(inside) > 1:
        (t0, _, cpu0), (t1, _, cpu1) = inside[0], inside[-1]
        out["loop_thread_cpu_share"] = round((cpu1 - cpu0) / (t1 - t0), 3)
    return out


async def hint_tap(dep) -> asyncio.subprocess.Process | None:  # noqa: ANN001
    """benchmarks.hinttap subscribed to the deployment's hint channel (None: no Redis)."""
    prefix = dep.env.get("LEADPUSH_REDIS_PREFIX")
    if not prefix:
        return None
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.hinttap",
        dep.env["LEADPUSH_REDIS_URL"],
        f"{prefix}:hints",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert proc.stdout is not None
    await proc.stdout.readline()  # "ready": subscribed
    return proc


async def tap_stamps(proc: asyncio.subprocess.Process | None) -> dict[str, Any]:
    if proc is None:
        return {"stamps": {}, "sizes": []}
    out, _ = await proc.communicate(b"")
    return json.loads(out or b'{"stamps": {}, "sizes": []}')


async def after_phases(server, listeners: list[Any], hold: float, close_share: float) -> dict[str, Any]:  # noqa: ANN001
    """Sockets open and idle for `hold` s; then `close_share` of them closed and the rest idle `hold` s."""
    out: dict[str, Any] = {}
    before = await asyncio.to_thread(gc_figures, server.url)
    await asyncio.sleep(hold)
    after = await asyncio.to_thread(gc_figures, server.url)
    out["hold"] = {"seconds": hold, "sockets": len(listeners), **gc_between(before, after)}
    log(f"hold: gc {out['hold']}")
    if close_share > 0:
        closing = listeners[: int(len(listeners) * close_share)]
        await asyncio.gather(*(listener.close() for listener in closing), return_exceptions=True)
        await asyncio.sleep(hold)
        end = await asyncio.to_thread(gc_figures, server.url)
        out["closed"] = {"closed": len(closing), "sockets": len(listeners) - len(closing), **gc_between(after, end)}
        log(f"closed {len(closing)}: gc {out['closed']}")
    return out


async def leadpush_phase(
    dep,  # noqa: ANN001
    manager,  # noqa: ANN001
    sales,  # noqa: ANN001
    leads: list[int],
    burst: int,
    idle: int,
    hold: float = 0.0,
    close_share: float = 0.0,
    listener_process: bool = False,
    requests_elsewhere: bool = False,
) -> dict[str, Any]:
    server = dep.api[0]
    await asyncio.sleep(1.0)
    gc_before = await asyncio.to_thread(gc_figures, server.url)
    rss_before = server.memory().get("VmRSS", 0)
    remote = await ProcessListeners().start() if listener_process else None
    if remote is not None:
        listeners, connect_s, failed = await remote.open(server.ws_url, [u.token for u in sales])
    else:
        listeners, connect_s, failed = await open_all(
            [lambda u=u: Listener(server.ws_url, u.token).open() for u in sales]
        )
    await asyncio.sleep(2.0)
    rss_after = server.memory().get("VmRSS", 0)
    gc_connected = await asyncio.to_thread(gc_figures, server.url)
    by_user = {listener.hello["data"]["userId"]: listener for listener in listeners}
    log(
        f"{dep.kind}: {len(listeners):,} sockets open in {connect_s:.1f} s ({failed} failed), RSS {rss_before / 1024:.0f} → {rss_after / 1024:.0f} MB"
    )
    out: dict[str, Any] = {
        "sockets": len(listeners),
        "connect_failed": failed,
        "connect_seconds": round(connect_s, 2),
        "rss_before_mb": round(rss_before / 1024, 1),
        "rss_after_mb": round(rss_after / 1024, 1),
        "kb_per_connection": round((rss_after - rss_before) / max(1, len(listeners)), 1),
    }
    # --requests-elsewhere: every request to the api processes that hold no socket (api process 1 then only
    # pushes: a WebSocket-only process, as a deployment could route /ws apart from the API).
    serving = dep.api[1:] if requests_elsewhere and len(dep.api) > 1 else dep.api
    conns = [HttpConnection(*host_port(serving[i % len(serving)].url)) for i in range(HTTP_CLIENTS)]
    users = list(by_user)
    random.shuffle(users)

    # Idle push: one at a time.
    idle_samples = []
    lost = 0
    for i in range(idle):
        uid, lead = users[i], leads[i]
        fut = by_user[uid].expect(("customer_assigned", lead))
        await conns[i % 2].request("PATCH", f"/api/customers/{lead}/assign", {"assignedTo": uid}, manager.token)
        t1 = time.perf_counter()
        try:
            idle_samples.append(await asyncio.wait_for(fut, 10) - t1)
        except TimeoutError:
            lost += 1
        await asyncio.sleep(0.02)
    out["idle_push"] = ms_stats(idle_samples)

    # Fan-out burst: `burst` assignments at once, each to a different connected user.
    jobs = list(zip(users[idle : idle + burst], leads[idle : idle + burst], strict=False))
    queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    after_response: list[float] = []
    by_route: dict[bool, list[float]] = {True: [], False: []}
    waits: list[asyncio.Future[float]] = []
    refused: Counter[str] = Counter()  # assign requests answered other than 200, by status and code
    responded: dict[int, tuple[float, bool]] = {}  # lead → (response time, same process)
    arrivals: dict[int, float] = {}

    async def client(index: int, conn: HttpConnection) -> None:
        same = serving[index % len(serving)] is server  # the sockets are all on api process 1
        while not queue.empty():
            uid, lead = queue.get_nowait()
            fut = by_user[uid].expect(("customer_assigned", lead))
            status, body = await conn.request(
                "PATCH", f"/api/customers/{lead}/assign", {"assignedTo": uid}, manager.token
            )
            t1 = time.perf_counter()
            if status != 200:  # nothing was assigned, so nothing will be pushed: not a lost push
                refused[f"{status} {(body or {}).get('code', '')}".strip()] += 1
                continue
            waits.append(fut)
            responded[lead] = (t1, same)

            def arrived(f: asyncio.Future[float], t1: float = t1, same: bool = same, lead: int = lead) -> None:
                arrivals[lead] = f.result()
                after_response.append(f.result() - t1)
                by_route[same].append(f.result() - t1)

            fut.add_done_callback(arrived)

    tap = await hint_tap(dep)
    lags: list[float] = []
    lag_task = asyncio.create_task(loop_lag(lags))
    if remote is not None:
        await remote.ask(op="lag", on=True)
    cpu_before = [service.cpu() for service in dep.api]
    started = time.perf_counter()
    await asyncio.gather(*(client(i, c) for i, c in enumerate(conns)))
    requests_done = time.perf_counter()
    done, pending = await asyncio.wait(waits, timeout=30)
    lag_task.cancel()
    listener_lags = (await remote.ask(op="lag", on=False))["lags"] if remote is not None else None
    tapped = await tap_stamps(tap)
    hinted: dict[str, float] = tapped["stamps"]
    last = max((f.result() for f in done), default=requests_done)
    # CPU seconds each api process spent from the first request to the last arrival (less load-sensitive
    # than the latencies on a shared machine; api process 1 holds the sockets).
    cpu_burst = [round(service.cpu() - before, 2) for service, before in zip(dep.api, cpu_before, strict=True)]
    closed = [listener.closed_with for listener in listeners if listener.closed_with is not None]
    out["burst"] = {
        "messages": len(jobs),
        "received": len(done),
        "lost": len(pending) + lost,
        "requests_refused": dict(refused),
        # Sockets the server closed during the phase (a lost message on one of them is the socket's).
        "sockets_closed": len(closed),
        "close_codes": sorted(set(closed)),
        "requests_seconds": round(requests_done - started, 2),
        "api_cpu_seconds": cpu_burst,
        "span_seconds": round(last - started, 2),
        # time.perf_counter() (CLOCK_MONOTONIC) at the first request and when the last was answered: to
        # line the burst up with other processes' time-stamps.
        "clock_started": started,
        "clock_requests_done": requests_done,
        "after_response": ms_stats(after_response),
    }
    if by_route[False]:
        out["burst"]["same_process"] = ms_stats(by_route[True])
        out["burst"]["cross_process"] = ms_stats(by_route[False])
    # This (client) process's event-loop lag during the burst: how late a 1 ms sleep wakes up. Every
    # arrival and response time-stamp here is late by the lag at that moment.
    out["burst"]["client_loop_lag"] = ms_stats(lags)
    out["burst"]["listener_process"] = listener_process
    out["burst"]["requests_elsewhere"] = requests_elsewhere
    if listener_lags is not None:
        # ... and with --listener-process, the lag of the process that reads the sockets and stamps arrivals.
        out["burst"]["listener_loop_lag"] = ms_stats(listener_lags)
    lag_dir = dep.env.get("BENCH_LOOP_LAG_DIR")
    if lag_dir:
        # Each api process's event-loop lag from the first request to the last answer (--server-loop-lag).
        await asyncio.sleep(1.5)  # the probe writes its samples once a second
        out["burst"]["api_loop_lag"] = [
            server_lags(Path(lag_dir) / f"lag-{service.pid}.txt", started, requests_done) for service in dep.api
        ]
        # The worker's and the scheduler's: loops with little to do in the burst (waiting for a core).
        out["burst"]["other_loop_lag"] = [
            server_lags(Path(lag_dir) / f"lag-{service.pid}.txt", started, requests_done) for service in dep.others
        ]
    if hinted:
        # A cross-process push split at Redis (a tap in its own process time-stamps the hint message):
        # the response (this process) → the hint on Redis, and the hint → arrival on the socket.
        sizes = [n for n in tapped["sizes"] if n]
        out["burst"]["hint_messages"] = {"count": len(sizes), "notifications_max": max(sizes, default=0)}
        cross = [(lead, t1) for lead, (t1, same) in responded.items() if not same and str(lead) in hinted]
        out["burst"]["cross_response_to_hint"] = ms_stats([hinted[str(lead)] - t1 for lead, t1 in cross])
        out["burst"]["cross_hint_to_arrival"] = ms_stats(
            [arrivals[lead] - hinted[str(lead)] for lead, _ in cross if lead in arrivals]
        )
    out["rss_end_mb"] = round(server.memory().get("VmRSS", 0) / 1024, 1)
    gc_after = await asyncio.to_thread(gc_figures, server.url)
    out["gc"] = {
        "full_collections": int(gc_after["collections"] - gc_before["collections"]),
        "pauses_ms": histogram_between(gc_before, gc_after),
        "cpu_pauses_ms": histogram_between(gc_before, gc_after, "cpu_buckets"),
        "full_seconds": round(gc_after["seconds"] - gc_before["seconds"], 3),
        "longest_full_ms": longest_between(gc_before, gc_after),
        "longest_full_cpu_ms": cpu_longest_between(gc_before, gc_after),
        "longest_before_sockets_ms": round(gc_before["longest"] * 1000, 1),  # start-up: imports, migrations
        "frozen_objects": int(gc_after["frozen"]),
        "thaws": int(gc_after["thaws"] - gc_before["thaws"]),
        "frozen_garbage_estimate": int(gc_after["garbage"]),
        "recounts": int(gc_after["recounts"] - gc_before["recounts"]),
        "recount_longest_ms_so_far": round(gc_after["recount_max"] * 1000, 1),
        # The same phase in two: opening the sockets, then the pushes and the burst.
        "connect": gc_between(gc_before, gc_connected),
        "pushes": gc_between(gc_connected, gc_after),
    }
    log(f"{dep.kind}: gc during the phase {out['gc']}")
    if hold > 0:
        out["after"] = await after_phases(server, listeners, hold, close_share)
    for c in conns:
        c.close()
    if remote is not None:
        closed_with = await remote.close()
        out["burst"]["sockets_closed"] = len(closed_with)
        out["burst"]["close_codes"] = sorted(set(closed_with))
    await asyncio.gather(*(listener.close() for listener in listeners), return_exceptions=True)
    return out


def bench_leadpush(
    kind: str,
    sockets: int,
    quick: bool,
    gc_freeze: bool = True,
    env: dict[str, str] | None = None,
    hold: float = 0.0,
    close_share: float = 0.0,
    listener_process: bool = False,
    requests_elsewhere: bool = False,
) -> dict[str, Any]:
    burst, idle = (200, 20) if quick else (1000, 50)
    # "off": the gc.freeze() policy turned off, to compare (LEADPUSH_GC_FREEZE_MIN_SOCKETS=0).
    extra = dict(env or {}) | ({} if gc_freeze else {"LEADPUSH_GC_FREEZE_MIN_SOCKETS": "0"})
    with deployment(kind, extra) as dep:
        manager, sales = make_team(dep.db_url, sockets)
        leads = make_leads(dep.db_url, burst + idle)
        result = asyncio.run(
            leadpush_phase(
                dep, manager, sales, leads, burst, idle, hold, close_share, listener_process, requests_elsewhere
            )
        )
        log(
            f"{kind}: idle push p99 {result['idle_push']['p99']} ms; burst of {burst}: span {result['burst']['span_seconds']} s,"
            f" p99 {result['burst']['after_response']['p99']} ms"
        )
        return {"backend": kind, "deployment": dep.describe(), "gc_freeze": gc_freeze, **result}


async def floor_phase(service, sockets: int, burst: int, rounds: int) -> dict[str, Any]:  # noqa: ANN001
    rss_before = service.memory().get("VmRSS", 0)
    arrivals: dict[int, list[float]] = {}
    clients: dict[int, Any] = {}
    readers = []

    async def open_one() -> Any:
        ws = await connect(service.ws_url, ping_interval=None, open_timeout=60)
        conn_id = json.loads(await ws.recv())["conn"]
        clients[conn_id] = ws

        async def read() -> None:
            try:
                async for _ in ws:
                    arrivals.setdefault(conn_id, []).append(time.perf_counter())
            except Exception:  # noqa: BLE001
                return

        readers.append(asyncio.create_task(read()))
        return ws

    opened, connect_s, failed = await open_all([open_one for _ in range(sockets)])
    await asyncio.sleep(2.0)
    rss_after = service.memory().get("VmRSS", 0)
    control = await connect(service.ws_url, ping_interval=None)
    json.loads(await control.recv())

    # Broadcast rounds.
    broadcast_samples: list[float] = []
    for _ in range(rounds):
        arrivals.clear()
        t0 = time.perf_counter()
        await control.send(json.dumps({"op": "broadcast", "data": {"customerId": 1, "customerName": "客户"}}))
        deadline = time.perf_counter() + 10
        while sum(len(v) for v in arrivals.values()) < len(opened) and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
        broadcast_samples += [t[0] - t0 for t in arrivals.values()]
        await control.recv()  # the control socket gets the broadcast too
        await asyncio.sleep(0.2)

    # Burst of individual relays.
    arrivals.clear()
    targets = random.sample(sorted(clients), min(burst, len(clients)))
    sent_at: dict[int, float] = {}
    started = time.perf_counter()
    for target in targets:
        sent_at[target] = time.perf_counter()
        await control.send(json.dumps({"op": "send", "to": target, "data": {"customerId": target}}))
    deadline = time.perf_counter() + 10
    while sum(len(arrivals.get(t, [])) for t in targets) < len(targets) and time.perf_counter() < deadline:
        await asyncio.sleep(0.005)
    burst_samples = [arrivals[t][0] - sent_at[t] for t in targets if arrivals.get(t)]
    last = max((arrivals[t][0] for t in targets if arrivals.get(t)), default=started)
    await control.close()
    for task in readers:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    return {
        "sockets": len(opened),
        "connect_failed": failed,
        "connect_seconds": round(connect_s, 2),
        "rss_before_mb": round(rss_before / 1024, 1),
        "rss_after_mb": round(rss_after / 1024, 1),
        "kb_per_connection": round((rss_after - rss_before) / max(1, len(opened)), 1),
        "broadcast": ms_stats(broadcast_samples),
        "burst": {
            "messages": len(targets),
            "span_seconds": round(last - started, 3),
            "after_trigger": ms_stats(burst_samples),
        },
    }


def bench_floor(sockets: int, quick: bool) -> dict[str, Any]:
    with scratch_dir() as workdir:
        service = floor_ws_service(workdir).start()
        try:
            out = asyncio.run(floor_phase(service, sockets, 200 if quick else 1000, 3 if quick else 10))
        finally:
            service.stop()
    log(
        f"floor: {out['sockets']:,} sockets, {out['kb_per_connection']} KB each, broadcast p99 {out['broadcast']['p99']} ms"
    )
    return {"backend": "floor", "deployment": "bare websockets server", **out}


def report(results: list[dict[str, Any]]) -> None:
    floor = next((r for r in results if r["backend"] == "floor"), None)
    for r in results:
        for name, phase in r.get("after", {}).items():
            log(f"{r['backend']} {name}: {phase}")
    rows = []
    for r in results:
        burst = r["burst"]
        stats = burst.get("after_response") or burst.get("after_trigger")
        rows.append(
            [
                r["backend"],
                r["sockets"],
                r["connect_failed"],
                r["connect_seconds"],
                r["rss_before_mb"],
                r["rss_after_mb"],
                r["kb_per_connection"],
                (r["kb_per_connection"] / floor["kb_per_connection"]) if floor and r is not floor else None,
                r.get("gc", {}).get("full_collections"),
                r.get("gc", {}).get("longest_full_ms"),
                r.get("idle_push", {}).get("p99"),
                r.get("broadcast", {}).get("p99"),
                burst["messages"],
                burst["span_seconds"],
                stats["p50"],
                stats["p99"],
            ]
        )
    print_table(
        "Many WebSocket connections in one process",
        [
            "server",
            "sockets",
            "failed",
            "connect s",
            "RSS before MB",
            "after MB",
            "KB/conn",
            "×floor",
            "gen-2 GCs",
            "longest gen-2 ms",
            "idle push p99 ms",
            "broadcast p99 ms",
            "burst msgs",
            "burst span s",
            "burst p50 ms",
            "burst p99 ms",
        ],
        rows,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=None, help="connections (default 5,000; quick 1,000)")
    parser.add_argument("--gc-freeze", choices=("on", "off"), default="on", help="the api role's gc.freeze() policy")
    parser.add_argument("--no-floor", action="store_true", help="skip the bare websockets server")
    parser.add_argument("--hold", type=float, default=0.0, help="then keep the sockets open this many seconds")
    parser.add_argument("--close-share", type=float, default=0.0, help="then close this share of them (with --hold)")
    parser.add_argument("--server-src", type=Path, help="run the leadpush processes from this checkout's src")
    parser.add_argument("--env", action="append", default=[], help="LEADPUSH_X=V for the leadpush processes")
    parser.add_argument(
        "--requests-elsewhere",
        action="store_true",
        help="send every HTTP request to the api processes that hold no socket (postgres)",
    )
    parser.add_argument(
        "--server-loop-lag",
        action="store_true",
        help="also measure the leadpush processes' event-loop lag in the burst (benchmarks/looplag)",
    )
    parser.add_argument(
        "--listener-process",
        action="store_true",
        help="hold the sockets in a process of their own (arrivals stamped there, not behind the HTTP clients)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.listener_process and args.hold:
        parser.error("--hold closes sockets itself: not with --listener-process")
    sockets = args.sockets or (1000 if args.quick else 5000)
    limit = raise_nofile(2 * sockets + 1000)
    if limit < sockets + 200:
        raise SystemExit(f"open-files limit {limit} is too low for {sockets} sockets")
    env = dict(item.split("=", 1) for item in args.env)
    if args.server_src:
        env["PYTHONPATH"] = os.pathsep.join((str(args.server_src.resolve()), str(Path(__file__).resolve().parents[1])))
    if args.server_loop_lag:
        lag_dir = tempfile.mkdtemp(prefix="leadpush-looplag-")
        probe = str(Path(__file__).resolve().parent / "looplag")
        env["PYTHONPATH"] = os.pathsep.join((probe, env.get("PYTHONPATH") or base_env()["PYTHONPATH"]))
        env["BENCH_LOOP_LAG_DIR"] = lag_dir
    results = [] if args.no_floor else [bench_floor(sockets, args.quick)]
    results += [
        bench_leadpush(
            kind,
            sockets,
            args.quick,
            args.gc_freeze == "on",
            env,
            args.hold,
            args.close_share,
            args.listener_process,
            args.requests_elsewhere,
        )
        for kind in backends(args.backend)
    ]
    report(results)
    out = {"name": "ws_5000", "quick": args.quick, "results": results}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
