"""Assign → fake WeChat / fake WeCom request arrival, and delivery throughput to the fake WeChat.

leadpush is pointed at the fake WeChat/WeCom server (`leadpush-fake-wechat`, from `fakes/`), which stamps every
accepted message with the time it arrived (`receivedAt`, wall clock of this same machine).

Latency: a manager assigns pool leads one at a time, to salespeople with a mini-program openid
(and subscribe credits) for WeChat, to salespeople with only a WeCom user id for WeCom (at most two
messages each, far below WeCom's 30 a minute per member), with the digest windows off
(LEADPUSH_DIGEST_WINDOW_WECHAT/_WECOM=0: a second message within the window waits for it by design;
benchmarks.credits measures the windows). Figure: receivedAt − the assignment's response time, p50/p99.

Throughput: 2,000 `customer_assigned` notifications for 200 salespeople with openids are written
through leadpush's own ownership-change path while no worker runs (so 2,000 WeChat deliveries, and
2,000 in-app ones, are pending); then leadpush starts and the worker drains them. Figure: messages
per second at the fake (first → last arrival) and the time from the worker answering /healthz until
the ledger shows every WeChat delivery sent. Defaults: LEADPUSH_DELIVERY_CONCURRENCY=16, batch 100.

    python -m benchmarks.channels [--quick] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import func, select

from benchmarks.common import (
    HttpConnection,
    backends,
    base_parser,
    deployment,
    fake_wechat_service,
    host_port,
    log,
    make_leads,
    make_team,
    ms_stats,
    print_table,
    scratch_dir,
    write_json,
)

TEMPLATE = "TPL_BENCH_ASSIGNED"
PAGE_ID = re.compile(r"[?&]id=(\d+)")
CARD_ID = re.compile(r"/customers/(\d+)")


def channel_env(fake_url: str) -> dict[str, str]:
    return {
        "LEADPUSH_WECHAT_APPID": "wxbench000000001",
        "LEADPUSH_WECHAT_SECRET": "bench-secret",
        "LEADPUSH_WECHAT_TEMPLATE_ID": TEMPLATE,
        "LEADPUSH_WECHAT_API_BASE": fake_url,
        "LEADPUSH_WECOM_CORPID": "wwbench0001",
        "LEADPUSH_WECOM_SECRET": "bench-corp-secret",
        "LEADPUSH_WECOM_AGENTID": "1000002",
        "LEADPUSH_WECOM_API_BASE": fake_url,
        # The path a notice takes, not what the digest windows hold back on purpose (a second WeCom message
        # within 10 s of the first waits for the window: benchmarks.credits measures that).
        "LEADPUSH_DIGEST_WINDOW_WECHAT": "0",
        "LEADPUSH_DIGEST_WINDOW_WECOM": "0",
    }


def prepare_fake(fake_url: str) -> None:
    with httpx.Client(base_url=fake_url, timeout=30) as http:
        http.post("/_fake/reset", json={}).raise_for_status()
        # A long-term template: the fake does not count credits; leadpush still spends its own.
        http.post("/_fake/templates", json={"templates": [TEMPLATE], "longTerm": True}).raise_for_status()


def grant_credits(db_url: str, user_ids: list[int], credits: int) -> None:
    """What POST /api/wechat/subscriptions records for `credits` accepted subscriptions, in bulk."""
    from leadpush.db import Database
    from leadpush.wechat.models import WechatSubscription

    db = Database(db_url)
    now = datetime.now(UTC)
    try:
        with db.write() as session:
            session.add_all(
                WechatSubscription(user_id=uid, template_id=TEMPLATE, credits=credits, updated_at=now)
                for uid in user_ids
            )
    finally:
        db.dispose()


def fake_messages(fake_url: str, kind: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=fake_url, timeout=60) as http:
        return http.get("/_fake/messages", params={"kind": kind}).json()["messages"]


def arrival_of(message: dict[str, Any], kind: str) -> int | None:
    if kind == "subscribe":
        m = PAGE_ID.search(str(message.get("page") or ""))
    else:
        m = CARD_ID.search(str(((message.get("body") or {}).get("textcard") or {}).get("url") or ""))
    return int(m.group(1)) if m else None


async def assign_one_by_one(dep, manager, users, leads: list[int]) -> dict[int, float]:  # noqa: ANN001
    """Assign leads[i] to users[i % len(users)]; returns lead → wall-clock time of the response."""
    conns = [HttpConnection(*host_port(s.url)) for s in dep.api]
    responded: dict[int, float] = {}
    for i, lead in enumerate(leads):
        status, body = await conns[i % len(conns)].request(
            "PATCH", f"/api/customers/{lead}/assign", {"assignedTo": users[i % len(users)].id}, manager.token
        )
        responded[lead] = time.time()
        if status != 200:
            raise RuntimeError(f"assign failed: {status} {body}")
        await asyncio.sleep(0.05)
    for c in conns:
        c.close()
    return responded


def collect(fake_url: str, kind: str, responded: dict[int, float], timeout: float = 30) -> tuple[list[float], int]:
    deadline = time.monotonic() + timeout
    while True:
        arrived = {arrival_of(m, kind): m["receivedAt"] for m in fake_messages(fake_url, kind)}
        missing = [lead for lead in responded if lead not in arrived]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return [arrived[lead] - t for lead, t in responded.items() if lead in arrived], len(missing)


def latency(kind: str, quick: bool, fake_url: str) -> dict[str, Any]:
    n = 40 if quick else 200
    with deployment(kind, channel_env(fake_url)) as dep:
        prepare_fake(fake_url)
        manager, wechat_users = make_team(dep.db_url, 20, wechat=True)
        _, wecom_users = make_team(dep.db_url, max(20, n // 2), wecom=True)
        grant_credits(dep.db_url, [u.id for u in wechat_users], n)
        leads = make_leads(dep.db_url, 2 * n + 2)
        # Warm-up: the first send of each channel fetches its access token.
        asyncio.run(assign_one_by_one(dep, manager, [wechat_users[0], wecom_users[0]], leads[:2]))
        time.sleep(1.0)
        wechat = asyncio.run(assign_one_by_one(dep, manager, wechat_users, leads[2 : n + 2]))
        wechat_lat, wechat_missing = collect(fake_url, "subscribe", wechat)
        wecom = asyncio.run(assign_one_by_one(dep, manager, wecom_users, leads[n + 2 :]))
        wecom_lat, wecom_missing = collect(fake_url, "wecom", wecom)
        out = {
            "backend": kind,
            "deployment": dep.describe(),
            "wechat": {**ms_stats(wechat_lat), "missing": wechat_missing},
            "wecom": {**ms_stats(wecom_lat), "missing": wecom_missing},
        }
        log(
            f"{kind}: assign → fake WeChat p50 {out['wechat']['p50']} ms p99 {out['wechat']['p99']} ms;"
            f" → fake WeCom p50 {out['wecom']['p50']} ms p99 {out['wecom']['p99']} ms"
        )
        return out


def write_pending(db_url: str, env: dict[str, str], users, leads: list[int]) -> None:  # noqa: ANN001
    """2,000 customer_assigned notifications through change_owner, with nobody running to send them."""
    from leadpush.assignment.service import Move, change_owner
    from leadpush.config import Settings
    from leadpush.context import AppContext
    from leadpush.leads.models import Customer
    from leadpush.users.models import User

    settings = Settings(**{k.removeprefix("LEADPUSH_").lower(): v for k, v in env.items() if k.startswith("LEADPUSH_")})
    ctx = AppContext.from_settings(settings)
    try:
        with ctx.db.write() as session:
            owners = {u.id: u for u in session.scalars(select(User).where(User.id.in_([u.id for u in users])))}
            customers = list(session.scalars(select(Customer).where(Customer.id.in_(leads)).order_by(Customer.id)))
            moves = [Move(c, owners[users[i % len(users)].id]) for i, c in enumerate(customers)]
            change_owner(ctx, session, actor=None, moves=moves, via="batch")
    finally:
        ctx.db.dispose()


def deliveries_by_status(db_url: str, channel: str) -> dict[str, int]:
    from leadpush.db import Database
    from leadpush.notify.models import Delivery

    db = Database(db_url)
    try:
        with db.read() as session:
            rows = session.execute(
                select(Delivery.status, func.count()).where(Delivery.channel == channel).group_by(Delivery.status)
            ).all()
    finally:
        db.dispose()
    return dict(rows)


def throughput(kind: str, quick: bool, fake_url: str) -> dict[str, Any]:
    n = 400 if quick else 2000
    with deployment(kind, channel_env(fake_url), start=False) as dep:
        prepare_fake(fake_url)
        _, users = make_team(dep.db_url, 200, wechat=True)
        grant_credits(dep.db_url, [u.id for u in users], n)
        leads = make_leads(dep.db_url, n)
        write_pending(dep.db_url, dep.env, users, leads)
        pending = deliveries_by_status(dep.db_url, "wechat")
        dep.start()
        worker = dep.others[0] if dep.others else dep.api[0]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status = deliveries_by_status(dep.db_url, "wechat")
            if status.get("sent", 0) + status.get("dead", 0) + status.get("skipped", 0) >= n:
                break
            time.sleep(0.2)
        all_sent = time.time()
        times = sorted(m["receivedAt"] for m in fake_messages(fake_url, "subscribe"))
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        out = {
            "backend": kind,
            "deployment": dep.describe(),
            "pending_before": pending,
            "status_after": deliveries_by_status(dep.db_url, "wechat"),
            "inapp_after": deliveries_by_status(dep.db_url, "inapp"),
            "received": len(times),
            "first_to_last_seconds": round(span, 3),
            "messages_per_second": round((len(times) - 1) / span, 1) if span else None,
            "ready_to_all_sent_seconds": round(all_sent - worker.ready_at, 2),
            "ready_to_last_received_seconds": round(times[-1] - worker.ready_at, 2) if times else None,
        }
        log(
            f"{kind}: {len(times):,} WeChat messages at {out['messages_per_second']}/s;"
            f" all sent {out['ready_to_all_sent_seconds']} s after the worker was up"
        )
        return out


def report(results: dict[str, list[dict[str, Any]]]) -> None:
    rows = []
    for r in results["latency"]:
        for ch in ("wechat", "wecom"):
            s = r[ch]
            rows.append([f"{r['backend']}: assign → fake {ch}", s["n"], s["p50"], s["p99"], s["max"], s["missing"]])
    print_table("Assign → fake platform arrival (ms)", ["figure", "n", "p50", "p99", "max", "missing"], rows)
    rows = [
        [
            r["backend"],
            sum(r["pending_before"].values()),
            r["received"],
            r["first_to_last_seconds"],
            r["messages_per_second"],
            r["ready_to_all_sent_seconds"],
            r["status_after"].get("sent", 0),
            r["status_after"].get("dead", 0) + r["status_after"].get("failed", 0),
        ]
        for r in results["throughput"]
    ]
    print_table(
        "Draining pending WeChat deliveries",
        ["backend", "pending", "received", "first→last s", "msg/s", "worker up → all sent s", "sent", "failed/dead"],
        rows,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = base_parser(__doc__.split("\n\n")[0]).parse_args(sys.argv[1:] if argv is None else argv)
    results: dict[str, list[dict[str, Any]]] = {"latency": [], "throughput": []}
    with scratch_dir() as workdir:
        fake = fake_wechat_service(workdir).start("/_fake/stats")
        try:
            for kind in backends(args.backend):
                results["latency"].append(latency(kind, args.quick, fake.url))
                results["throughput"].append(throughput(kind, args.quick, fake.url))
        finally:
            fake.stop()
    report(results)
    out = {"name": "channels", "quick": args.quick, "results": results, "run_id": uuid.uuid4().hex[:8]}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
