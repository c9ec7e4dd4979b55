"""Assign → WebSocket arrival, and assign → long-poll arrival, against a bare `websockets` relay.

A salesperson keeps `/ws` open (resumed from 0); a manager assigns one pool lead at a time to them
over HTTP. For each assignment we record when the manager's response came back and when the
`customer_assigned` message reached the salesperson's socket, both on this process's clock:
"after response" is arrival − response (negative: the push beat the response), "after request" is
arrival − request sent. With several processes the socket is on api process 1 and the assignments
alternate between api 1 (same process) and api 2 (the push crosses Redis: the committing process publishes it).

Long-poll: `GET /api/notifications?after=<last>&wait=20` is parked first, then the lead is assigned;
arrival is the time the poll answered with the new notification − the assignment's response time.
A poll that answers early with nothing new is asked again at once, as a client would, and counted.

Floor: the bare relay (benchmarks.floor_ws): one socket asks the server to push a message to
another; trigger sent → arrival.

    python -m benchmarks.ws_latency [--quick] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

from websockets.asyncio.client import connect

from benchmarks.common import (
    HttpConnection,
    backends,
    base_parser,
    deployment,
    floor_ws_service,
    host_port,
    log,
    make_leads,
    make_team,
    ms_stats,
    print_table,
    scratch_dir,
    write_json,
)
from benchmarks.wsclient import Listener

SALES = 10


async def ws_samples(dep, manager, sales, leads: list[int], n: int) -> dict[str, Any]:  # noqa: ANN001
    home = dep.api[0]
    listeners = [await Listener(home.ws_url, u.token).open() for u in sales]
    await asyncio.sleep(0.7)  # past the server's resume grace period
    conns = [HttpConnection(*host_port(s.url)) for s in dep.api]
    by_route: dict[str, list[tuple[float, float]]] = {"same": [], "cross": []}
    lost = 0
    for i in range(n):
        k = i % len(sales)
        lead = leads[i]
        via = i % len(conns)
        fut = listeners[k].expect(("customer_assigned", lead))
        t0 = time.perf_counter()
        status, body = await conns[via].request(
            "PATCH", f"/api/customers/{lead}/assign", {"assignedTo": sales[k].id}, manager.token
        )
        t1 = time.perf_counter()
        if status != 200:
            raise RuntimeError(f"assign failed: {status} {body}")
        try:
            arrival = await asyncio.wait_for(fut, timeout=10)
        except TimeoutError:
            lost += 1
            continue
        by_route["same" if via == 0 else "cross"].append((arrival - t1, arrival - t0))
        await asyncio.sleep(0.01 + random.random() * 0.01)
    for c in conns:
        c.close()
    for listener in listeners:
        await listener.close()
    everything = by_route["same"] + by_route["cross"]
    out: dict[str, Any] = {
        "after_response": ms_stats([a for a, _ in everything]),
        "after_request": ms_stats([b for _, b in everything]),
        "pushed_before_response": sum(1 for a, _ in everything if a < 0),
        "lost": lost,
    }
    if by_route["cross"]:
        out["same_process"] = ms_stats([a for a, _ in by_route["same"]])
        out["cross_process"] = ms_stats([a for a, _ in by_route["cross"]])
    return out


async def longpoll_samples(dep, manager, user, leads: list[int], n: int) -> dict[str, Any]:  # noqa: ANN001
    poll = HttpConnection(*host_port(dep.api[0].url))
    conns = [HttpConnection(*host_port(s.url)) for s in dep.api]
    status, body = await poll.request("GET", "/api/notifications?after=0", None, user.token)
    last = body["data"]["lastId"]
    after_response: list[float] = []
    early_empty = 0

    async def timed_poll(after: int) -> tuple[list[dict[str, Any]], int, float]:
        """Poll as a client does: an empty answer before anything new is simply asked again."""
        nonlocal early_empty
        deadline = time.perf_counter() + 20
        while True:
            status, body = await poll.request("GET", f"/api/notifications?after={after}&wait=20", None, user.token)
            arrived = time.perf_counter()
            items = body["data"]["items"] if status == 200 else []
            if items or arrived > deadline:
                return items, body["data"]["lastId"] if items else after, arrived
            early_empty += 1

    for i in range(n):
        via = i % len(conns)
        parked = asyncio.create_task(timed_poll(last))
        await asyncio.sleep(0.05)
        status, _ = await conns[via].request(
            "PATCH", f"/api/customers/{leads[i]}/assign", {"assignedTo": user.id}, manager.token
        )
        t1 = time.perf_counter()
        items, last, t2 = await parked
        if items:
            after_response.append(t2 - t1)
    poll.close()
    for c in conns:
        c.close()
    return {"after_response": ms_stats(after_response), "early_empty_answers": early_empty}


async def floor_samples(url: str, n: int) -> dict[str, Any]:
    async with connect(url, ping_interval=None) as a, connect(url, ping_interval=None) as b:
        json.loads(await a.recv())
        target = json.loads(await b.recv())["conn"]
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            await a.send(json.dumps({"op": "send", "to": target, "data": {"customerId": 1, "customerName": "客户"}}))
            await b.recv()
            samples.append(time.perf_counter() - t0)
            await asyncio.sleep(0.01 + random.random() * 0.01)
    return {"trigger_to_arrival": ms_stats(samples)}


def bench_leadpush(kind: str, quick: bool) -> dict[str, Any]:
    n_ws, n_poll = (60, 30) if quick else (300, 100)
    with deployment(kind) as dep:
        manager, sales = make_team(dep.db_url, SALES + 1)
        leads = make_leads(dep.db_url, n_ws + n_poll)
        ws = asyncio.run(ws_samples(dep, manager, sales[:SALES], leads[:n_ws], n_ws))
        log(f"{kind}: assign → WebSocket p50 {ws['after_response']['p50']} ms, p99 {ws['after_response']['p99']} ms")
        poll = asyncio.run(longpoll_samples(dep, manager, sales[SALES], leads[n_ws:], n_poll))
        log(
            f"{kind}: assign → long-poll p50 {poll['after_response']['p50']} ms, p99 {poll['after_response']['p99']} ms"
        )
        return {"backend": kind, "deployment": dep.describe(), "ws": ws, "longpoll": poll}


def bench_floor(quick: bool) -> dict[str, Any]:
    with scratch_dir() as workdir:
        floor = floor_ws_service(workdir).start()
        try:
            out = asyncio.run(floor_samples(floor.ws_url, 60 if quick else 300))
        finally:
            floor.stop()
    log(f"floor: push p50 {out['trigger_to_arrival']['p50']} ms, p99 {out['trigger_to_arrival']['p99']} ms")
    return {"backend": "floor", "deployment": "bare websockets relay", **out}


def report(results: list[dict[str, Any]]) -> None:
    floor = next((r for r in results if r["backend"] == "floor"), None)
    f99 = floor["trigger_to_arrival"]["p99"] if floor else None
    rows = []
    for r in results:
        if r["backend"] == "floor":
            s = r["trigger_to_arrival"]
            rows.append(["floor push", s["n"], s["p50"], s["p99"], s["max"], None, None])
            continue
        for label, s in (
            ("WS after response", r["ws"]["after_response"]),
            ("WS after request", r["ws"]["after_request"]),
            ("  same process", r["ws"].get("same_process")),
            ("  cross process", r["ws"].get("cross_process")),
            ("long-poll after response", r["longpoll"]["after_response"]),
        ):
            if s is None:
                continue
            rows.append(
                [
                    f"{r['backend']}: {label}",
                    s["n"],
                    s["p50"],
                    s["p99"],
                    s["max"],
                    s["p99"] / f99 if f99 else None,
                    None,
                ]
            )
            rows[-1][-1] = r["ws"]["lost"] if label.startswith("WS after response") else None
    print_table("Assign → arrival (ms)", ["figure", "n", "p50", "p99", "max", "p99 ×floor", "lost"], rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = base_parser(__doc__.split("\n\n")[0]).parse_args(sys.argv[1:] if argv is None else argv)
    results = [bench_floor(args.quick)]
    results += [bench_leadpush(kind, args.quick) for kind in backends(args.backend)]
    report(results)
    out = {"name": "ws_latency", "quick": args.quick, "results": results}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
