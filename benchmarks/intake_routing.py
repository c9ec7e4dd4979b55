"""Intake → the routed owner's WebSocket, and an intake burst of 10,000 leads with routing.

K salespeople keep `/ws` open (resumed from 0; with several api processes, alternately on each). An
admin creates a lead source (its integration token) and a round-robin distribution rule over the K
for that source. Leads come in through `POST /api/leads/inbound` with the source's token; each one is
routed in the intake's own transaction and its owner hears `customer_assigned`.

Latency: a few clients post one lead each at a time, on a fixed schedule that gives a steady total
rate (a client that falls behind sends at once and the lateness is counted). For each lead, arrival
of `customer_assigned` (matched by the lead's unique name) on whichever salesperson's socket got it −
the time its request was sent; also − the time its response came back. With several processes the
requests alternate between the api processes, so about half the pushes cross Redis.

Burst: 10,000 leads (unique phones and external ids) in as few requests as the endpoint takes, sent
one after the other to one api process (the sockets are on both). Reported: wall time from the first
request sent until every response is back (the leads are created and routed in those transactions;
the database is checked), and until every owner has heard; notifications created (a digest per owner
per request, by design); each digest's arrival on its owner's socket after its request's response
(and after the request was sent); and the CPU the server used, which stays meaningful on a busy
machine where wall times do not: leadpush's processes, plus with PostgreSQL the database's own
backends for this database.

    python -m benchmarks.intake_routing [--quick] [--backend sqlite|postgres|both] [--path inbound|customers]
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from benchmarks.common import (
    PG_ADMIN_URL,
    BenchUser,
    HttpConnection,
    backends,
    base_parser,
    check,
    cpu_seconds,
    deployment,
    host_port,
    ledger_counts,
    log,
    make_team,
    make_users,
    ms_stats,
    pct,
    print_table,
    sync_client,
    write_json,
)
from benchmarks.wsclient import Listener

SALES = 20
CLIENTS = 4
RATE = 10.0  # leads per second, all clients together
LATENCY_LEADS = 600
BURST = 10_000
CUSTOMERS_MAX = 1000  # POST /api/customers takes a list of up to LEADPUSH_MAX_BATCH (1,000 by default)
INBOUND_MAX = 10_000  # POST /api/leads/inbound: up to LEADPUSH_MAX_INBOUND_BATCH (10,000 by default)


def stats(seconds: list[float]) -> dict[str, float]:
    """ms_stats plus p95."""
    out = ms_stats(seconds)
    out["p95"] = round(pct([s * 1000 for s in seconds], 95), 2) if seconds else math.nan
    return out


# --------------------------------------------------------------------------------------
# Setup through the API: a lead source (its token) and a round-robin rule
# --------------------------------------------------------------------------------------


@dataclass
class Intake:
    """How leads enter in this run: `inbound` (the intake endpoint, routed by the rule) or `customers`
    (POST /api/customers by an admin, no assignedTo, routed by the same rule through the routing hook)."""

    path: str
    token: str
    source_key: str
    max_per_request: int
    rule: dict[str, Any] = field(default_factory=dict)
    # path "assigned" (a baseline without routing): the client names the owner, in turn.
    owners: list[int] = field(default_factory=list)
    turn: int = 0

    @property
    def url_path(self) -> str:
        return "/api/leads/inbound" if self.path == "inbound" else "/api/customers"

    def lead(self, name: str, phone: str, external_id: str) -> dict[str, Any]:
        if self.path == "inbound":
            return {"name": name, "phone": phone, "externalId": external_id, "region": "上海", "tags": ["bench"]}
        lead: dict[str, Any] = {
            "name": name,
            "phone": phone,
            "source": self.source_key,
            "region": "上海",
            "tags": ["bench"],
        }
        if self.path == "assigned":
            lead["assignedTo"] = self.owners[self.turn % len(self.owners)]
            self.turn += 1
        return lead

    def body(self, leads: list[dict[str, Any]]) -> Any:
        if len(leads) == 1:
            return leads[0]
        return {"leads": leads} if self.path == "inbound" else leads


def find_token(data: Any) -> str | None:
    """The intake token in a lead source's creation answer, wherever the shape puts it."""
    if isinstance(data, dict):
        for key in ("intakeToken", "token"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return value
        for value in data.values():
            found = find_token(value)
            if found:
                return found
    return None


def setup(dep, admin: BenchUser, sales: list[BenchUser], path: str, per_request: int | None) -> Intake:  # noqa: ANN001
    key = f"bench-{uuid.uuid4().hex[:6]}"
    if path == "assigned":
        return Intake(path, admin.token, key, per_request or CUSTOMERS_MAX, owners=[u.id for u in sales])
    with sync_client(dep.api[0].url, admin.token) as client:
        rule = check(
            client.post(
                "/api/distribution-rules",
                json={
                    "name": f"压测轮询 {key}",
                    "sources": [key],
                    "action": "round_robin",
                    "members": [{"userId": u.id} for u in sales],
                    "fallback": "pool",
                },
            )
        )
        if path == "customers":
            return Intake(path, admin.token, key, per_request or CUSTOMERS_MAX, rule)
        created = check(
            client.post(
                "/api/lead-sources",
                json={"key": key, "name": f"压测 {key[-6:]}", "duplicatePolicy": "flag"},
            )
        )
        token = find_token(created)
        if not token:
            raise RuntimeError(f"no intake token in the lead source's answer: {created}")
    return Intake(path, token, key, per_request or INBOUND_MAX, rule)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def pg_backends_cpu(dep) -> dict[int, float]:  # noqa: ANN001
    """CPU seconds used so far by each PostgreSQL backend serving this deployment's database (by pid)."""
    if dep.kind != "postgres":
        return {}
    import psycopg

    name = dep.db_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,))]
    return {pid: cpu_seconds(pid) for pid in pids}


class CpuMeter:
    """CPU used between `start` and `stop` by leadpush's processes and (PostgreSQL) the database's backends.
    A backend that started in between counts in full; one that ended in between is missed (the pools keep
    their connections, so few do)."""

    def __init__(self, dep) -> None:  # noqa: ANN001
        self.dep = dep

    def start(self) -> CpuMeter:
        self.services = {s.name: s.cpu() for s in self.dep.services}
        self.backends = pg_backends_cpu(self.dep)
        return self

    def stop(self) -> dict[str, float]:
        out = {s.name: round(s.cpu() - self.services[s.name], 2) for s in self.dep.services}
        after = pg_backends_cpu(self.dep)
        if after or self.backends:
            used = sum(v - self.backends.get(pid, 0.0) for pid, v in after.items() if not math.isnan(v))
            out["postgresql"] = round(used, 2)
        return out


# --------------------------------------------------------------------------------------
# Sockets
# --------------------------------------------------------------------------------------


class Owners:
    """One listener per salesperson; every `customer_assigned` / `customers_assigned` they get, with
    its arrival time and what it names."""

    def __init__(self) -> None:
        self.listeners: dict[int, Listener] = {}
        self.api_of: dict[int, int] = {}  # user id -> index of the api process holding the socket
        self.payloads: dict[tuple[int, Any], dict[str, Any]] = {}

    async def open(self, dep, sales: list[BenchUser]) -> Owners:  # noqa: ANN001
        for i, user in enumerate(sales):
            where = i % len(dep.api)

            def key_of(message: dict[str, Any], uid: int = user.id) -> Any:
                data = message.get("data") or {}
                kind = message.get("type")
                if kind == "customer_assigned":
                    key = ("one", data.get("customerName"))
                elif kind == "customers_assigned":
                    key = ("digest", data.get("batchId"))
                else:
                    return None
                self.payloads[(uid, key)] = data
                return key

            self.listeners[user.id] = await Listener(dep.api[where].ws_url, user.token, key_of).open()
            self.api_of[user.id] = where
        await asyncio.sleep(0.7)  # past the server's resume grace period
        return self

    def singles(self) -> dict[str, tuple[int, float]]:
        """Each lead heard of singly (`customer_assigned`), by name: who heard and when."""
        out = {}
        for uid, listener in self.listeners.items():
            for key, at in list(listener.arrived.items()):
                if key[0] == "one":
                    out[key[1]] = (uid, at)
        return out

    def digests(self) -> list[tuple[int, float, dict[str, Any]]]:
        out = []
        for uid, listener in self.listeners.items():
            for key, at in listener.arrived.items():
                if key[0] == "digest":
                    out.append((uid, at, self.payloads.get((uid, key), {})))
        return out

    def forget(self) -> None:
        for listener in self.listeners.values():
            listener.arrived.clear()
        self.payloads.clear()

    async def close(self) -> None:
        for listener in self.listeners.values():
            await listener.close()


# --------------------------------------------------------------------------------------
# 1. One lead at a time, at a steady rate
# --------------------------------------------------------------------------------------


async def latency_run(dep, intake: Intake, sales: list[BenchUser], n: int) -> dict[str, Any]:  # noqa: ANN001
    owners = await Owners().open(dep, sales)
    meter = CpuMeter(dep).start()
    tag = uuid.uuid4().hex[:6]
    sent: dict[str, tuple[float, float, int]] = {}  # name -> (request sent, response back, api index)
    statuses: Counter[int] = Counter()
    late: list[float] = []
    errors: list[str] = []
    start = time.perf_counter() + 0.2

    async def client(c: int) -> None:
        conns = [HttpConnection(*host_port(s.url)) for s in dep.api]
        for i in range(c, n, CLIENTS):
            planned = start + i / RATE
            now = time.perf_counter()
            if planned > now:
                await asyncio.sleep(planned - now)
            else:
                late.append(now - planned)
            name = f"速{tag}-{i}"
            # Not i % processes: the rotation over sockets placed alternately would line up with it.
            via = (i // 3) % len(conns)
            body = intake.body([intake.lead(name, f"139{(i + int(tag, 16)) % 10**8:08d}", f"{tag}-{i}")])
            t0 = time.perf_counter()
            status, answer = await conns[via].request("POST", intake.url_path, body, intake.token)
            t1 = time.perf_counter()
            statuses[status] += 1
            if status >= 300:
                if len(errors) < 5:
                    errors.append(f"{status} {str(answer)[:300]}")
                continue
            sent[name] = (t0, t1, via)
        for conn in conns:
            conn.close()

    await asyncio.gather(*(client(c) for c in range(CLIENTS)))
    elapsed = time.perf_counter() - start
    deadline = time.perf_counter() + 15
    while time.perf_counter() < deadline and not set(sent) <= set(owners.singles()):
        await asyncio.sleep(0.05)
    heard = owners.singles()
    cpu = meter.stop()
    after_request, after_response, same, cross = [], [], [], []
    per_owner: Counter[int] = Counter()
    lost = 0
    for name, (t0, t1, via) in sent.items():
        found = heard.get(name)
        if found is None:
            lost += 1
            continue
        uid, at = found
        per_owner[uid] += 1
        after_request.append(at - t0)
        after_response.append(at - t1)
        (same if owners.api_of[uid] == via else cross).append(at - t1)
    await owners.close()
    out: dict[str, Any] = {
        "leads": n,
        "clients": CLIENTS,
        "rate_planned": RATE,
        "rate_achieved": round(n / elapsed, 1) if elapsed else None,
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": errors,
        "late_sends": len(late),
        "late_max_ms": round(max(late) * 1000, 1) if late else 0.0,
        "after_request": stats(after_request),
        "after_response": stats(after_response),
        "request": stats([t1 - t0 for t0, t1, _ in sent.values()]),
        "lost": lost,
        "server_cpu_seconds": cpu,
        "server_cpu_ms_per_lead": round(sum(cpu.values()) * 1000 / len(sent), 2) if sent else None,
        "owners_used": len(per_owner),
        "per_owner_min": min(per_owner.values()) if per_owner else 0,
        "per_owner_max": max(per_owner.values()) if per_owner else 0,
    }
    if cross:
        out["same_process"] = stats(same)
        out["cross_process"] = stats(cross)
    return out


# --------------------------------------------------------------------------------------
# 2. A burst of 10,000 in as few requests as allowed
# --------------------------------------------------------------------------------------


def leads_of(db_url: str, source_key: str, prefix: str) -> dict[int, tuple[str, int | None]]:
    """The burst's leads in the database: id -> (name, owner id)."""
    from leadpush.db import Database
    from leadpush.leads.models import Customer

    db = Database(db_url)
    try:
        with db.read() as session:
            rows = session.execute(
                select(Customer.id, Customer.name, Customer.owner_id).where(
                    Customer.source == source_key, Customer.name.like(f"{prefix}%")
                )
            )
            return {r.id: (r.name, r.owner_id) for r in rows}
    finally:
        db.dispose()


async def burst_run(dep, intake: Intake, sales: list[BenchUser], n: int) -> dict[str, Any]:  # noqa: ANN001
    owners = await Owners().open(dep, sales)
    tag = uuid.uuid4().hex[:6]
    prefix = f"潮{tag}-"
    size = min(intake.max_per_request, n)
    leads = [intake.lead(f"{prefix}{i}", f"137{(i + int(tag, 16)) % 10**8:08d}", f"b{tag}-{i}") for i in range(n)]
    chunks = [leads[i : i + size] for i in range(0, n, size)]
    before = ledger_counts(dep.db_url)
    hwm_before = {s.name: s.memory().get("VmHWM", 0) for s in dep.api}
    meter = CpuMeter(dep).start()
    conn = HttpConnection(*host_port(dep.api[-1].url))
    timings: list[tuple[float, float]] = []
    started = time.perf_counter()
    for chunk in chunks:
        t0 = time.perf_counter()
        status, answer = await conn.request("POST", intake.url_path, intake.body(chunk), intake.token)
        t1 = time.perf_counter()
        if status >= 300:
            raise RuntimeError(f"intake of {len(chunk)} failed: {status} {str(answer)[:500]}")
        timings.append((t0, t1))
    responses_done = time.perf_counter()
    conn.close()
    # Every lead created and routed? (the routing runs in the intake's transaction, so this is a check)
    in_db = leads_of(dep.db_url, intake.source_key, prefix)
    routed = sum(1 for _, owner in in_db.values() if owner is not None)
    checked = time.perf_counter()
    # Wait for every owner to hear of every lead routed to them.
    expected = {cid for cid, (_, owner) in in_db.items() if owner is not None}
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline:
        heard: set[int] = set()
        for _, _, data in owners.digests():
            heard.update(data.get("customerIds") or [])
        singles = owners.singles()
        heard.update(cid for cid, (name, _) in in_db.items() if name in singles)
        if expected <= heard:
            break
        await asyncio.sleep(0.05)
    cpu = meter.stop()
    after = ledger_counts(dep.db_url)
    # Each push: which request it belongs to (from its leads' names), its lateness after that request.
    request_of = {cid: int(name[len(prefix) :]) // size for cid, (name, _) in in_db.items()}
    pushes: list[tuple[int, int, float]] = []  # (owner, request index, arrival)
    for uid, at, data in owners.digests():
        ids = data.get("customerIds") or []
        if ids and ids[0] in request_of:
            pushes.append((uid, request_of[ids[0]], at))
    singles = owners.singles()
    for cid, (name, _) in in_db.items():
        found = singles.get(name)
        if found:
            pushes.append((found[0], request_of[cid], found[1]))
    last_heard = max((at for _, _, at in pushes), default=math.nan)
    per_owner_after_response: dict[int, list[float]] = defaultdict(list)
    after_response, after_request = [], []
    for uid, r, at in pushes:
        t0, t1 = timings[r]
        per_owner_after_response[uid].append(at - t1)
        after_response.append(at - t1)
        after_request.append(at - t0)
    owner_p99 = {uid: pct(v, 99) for uid, v in per_owner_after_response.items()}
    per_owner_leads = Counter(owner for _, owner in in_db.values() if owner is not None)
    hwm_after = {s.name: s.memory().get("VmHWM", 0) for s in dep.api}
    await owners.close()
    digests = sum(1 for uid, at, data in owners.digests())
    return {
        "leads": n,
        "requests": len(chunks),
        "per_request": size,
        "created": len(in_db),
        "routed": routed,
        "seconds_to_responses": round(responses_done - started, 3),
        "seconds_to_checked": round(checked - started, 3),
        "seconds_to_all_heard": round(last_heard - started, 3) if not math.isnan(last_heard) else None,
        "leads_per_second": round(routed / (responses_done - started), 1),
        "request": stats([t1 - t0 for t0, t1 in timings]),
        "notifications_created": after["notifications"] - before["notifications"],
        "deliveries_created": after["deliveries"] - before["deliveries"],
        "pushes_received": len(pushes),
        "digests_received": digests,
        "heard_all": len(expected - heard) == 0 if expected else False,
        "not_heard": len(expected - heard),
        "push_after_response": stats(after_response),
        "push_after_request": stats(after_request),
        "owner_p99_max_ms": round(max(owner_p99.values()) * 1000, 2) if owner_p99 else None,
        "owners": len(per_owner_leads),
        "leads_per_owner_min": min(per_owner_leads.values()) if per_owner_leads else 0,
        "leads_per_owner_max": max(per_owner_leads.values()) if per_owner_leads else 0,
        "server_cpu_seconds": cpu,
        "server_cpu_ms_per_lead": round(sum(cpu.values()) * 1000 / n, 3),
        # The work of one intake request is one transaction on one thread: this process's CPU plus the
        # database's is about the wall time it would take on an idle machine.
        "served_by": dep.api[-1].name,
        "serving_cpu_seconds": round(cpu[dep.api[-1].name] + cpu.get("postgresql", 0.0), 2),
        "api_hwm_before_mb": round(max(hwm_before.values()) / 1024, 1),
        "api_hwm_after_mb": round(max(hwm_after.values()) / 1024, 1),
    }


# --------------------------------------------------------------------------------------
# Runs, report
# --------------------------------------------------------------------------------------


def bench(kind: str, quick: bool, path: str, per_request: int | None) -> dict[str, Any]:
    n_latency = 150 if quick else LATENCY_LEADS
    n_burst = 3000 if quick else BURST
    with deployment(kind) as dep:
        (admin,) = make_users(dep.db_url, [{"name": f"管理员{uuid.uuid4().hex[:6]}", "role": "admin", "team": None}])
        _, sales = make_team(dep.db_url, SALES)
        intake = setup(dep, admin, sales, path, per_request)
        out: dict[str, Any] = {
            "backend": kind,
            "deployment": dep.describe(),
            "path": intake.url_path,
            "salespeople": len(sales),
            "max_per_request": intake.max_per_request,
        }
        lat = asyncio.run(latency_run(dep, intake, sales, n_latency))
        out["latency"] = lat
        log(
            f"{kind}: intake → owner's socket p50 {lat['after_request']['p50']} ms,"
            f" p99 {lat['after_request']['p99']} ms, lost {lat['lost']}"
        )
        burst = asyncio.run(burst_run(dep, intake, sales, n_burst))
        out["burst"] = burst
        log(
            f"{kind}: burst of {burst['routed']:,} routed in {burst['requests']} request(s):"
            f" {burst['seconds_to_responses']} s, all heard at {burst['seconds_to_all_heard']} s,"
            f" owner push p99 (max over owners) {burst['owner_p99_max_ms']} ms"
        )
        return out


def report(results: list[dict[str, Any]]) -> None:
    rows = []
    for r in results:
        lat = r["latency"]
        for label, s in (
            ("after request sent", lat["after_request"]),
            ("after response", lat["after_response"]),
            ("  after response, same process", lat.get("same_process")),
            ("  after response, cross process", lat.get("cross_process")),
            ("request", lat["request"]),
        ):
            if s:
                rows.append([f"{r['backend']}: {label}", s["n"], s["p50"], s["p95"], s["p99"], s["max"]])
    print_table(
        f"Intake → owner's socket, {CLIENTS} clients at {RATE:g} leads/s (ms)",
        ["figure", "n", "p50", "p95", "p99", "max"],
        rows,
    )
    rows = []
    for r in results:
        b = r["burst"]
        rows.append(
            [
                r["backend"],
                b["routed"],
                b["requests"],
                b["seconds_to_responses"],
                b["seconds_to_all_heard"],
                b["notifications_created"],
                b["push_after_response"]["p99"],
                b["owner_p99_max_ms"],
                b["push_after_request"]["max"],
                b["not_heard"],
            ]
        )
    print_table(
        "Intake burst with routing",
        [
            "db",
            "routed",
            "requests",
            "responses s",
            "all heard s",
            "notifications",
            "push p99 ms*",
            "worst owner p99 ms*",
            "push max ms**",
            "not heard",
        ],
        rows,
    )
    print("  * after the response of the push's request; ** after the request was sent")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--path",
        choices=("inbound", "customers", "assigned"),
        default="inbound",
        help="inbound: POST /api/leads/inbound with an intake token; customers: POST /api/customers without"
        " assignedTo (routed through the hook); assigned: POST /api/customers naming the owner (no routing, a baseline)",
    )
    parser.add_argument(
        "--per-request",
        type=int,
        help=f"leads per burst request (default: the endpoint's maximum, {INBOUND_MAX:,} inbound, {CUSTOMERS_MAX:,} customers)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    results = [bench(kind, args.quick, args.path, args.per_request) for kind in backends(args.backend)]
    report(results)
    out = {"name": "intake_routing", "quick": args.quick, "results": results}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
