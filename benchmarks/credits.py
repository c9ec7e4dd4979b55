"""WeChat credits spent per 100 assignments in bursts, before and after the time-window digests (issue 16).

A subscribe message costs the salesperson one credit (one "allow" tap in the mini program). leadpush is
pointed at the fake WeChat (`leadpush-fake-wechat`), with a ONE-TIME template: the fake keeps the credit
ledger per (openid, template), and what this benchmark reports is read from that ledger (credits given −
credits left), next to the messages the fake accepted and what leadpush's own ledger recorded.

Three bursts of 100 assignments, each to 5 fresh salespeople with a mini-program openid and plenty of
credits (so no notice falls back to WeCom):
- clicks: a manager assigns 100 pool leads one at a time (`PATCH /api/customers/{id}/assign`), round
  robin over the 5, evenly over ~60 s;
- batch: 100 leads in 5 `POST /api/customers/batch-assign` requests of 20, one per salesperson, back to back;
- transfer: 100 leads held by 5 other salespeople (no openid, no room for more) for 2 hours are overdue
  for a new automatic-transfer rule (no follow-up within 1 hour of assignment, round robin over the
  team): its first run moves them to the 5.

"before" = digest windows 0 (`LEADPUSH_DIGEST_WINDOW_WECHAT=0`, `LEADPUSH_DIGEST_WINDOW_WECOM=0`: every
notice on its own); "after" = the defaults (30 s WeChat, 10 s WeCom). Real time, on
a shortened scale to stay within a few minutes: with `--scale 0.33` (default) the clicks span ~20 s
and the windows are 10 s / 3.3 s — the same number of clicks per window, so the same credits as at
full scale. `--scale 1` runs the real figures (about 6 minutes per database).

The figures are printed, and written as a section of docs/benchmarks.md between the markers
`<!-- credits:begin -->` and `<!-- credits:end -->` (replaced on each run; `--no-doc` to skip).

    python -m benchmarks.credits [--quick] [--scale 0.33] [--backend sqlite|postgres|both] [--no-doc]
    python -m benchmarks.credits --render results.json   # rewrite the section from an earlier --json
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from benchmarks.channels import channel_env
from benchmarks.common import (
    ROOT,
    BenchUser,
    HttpConnection,
    backends,
    base_parser,
    check,
    deployment,
    fake_wechat_service,
    fmt,
    host_port,
    load_average,
    log,
    make_leads,
    make_team,
    make_users,
    print_table,
    scratch_dir,
    sync_client,
    write_json,
)

TEMPLATE = "TPL_BENCH_CREDITS"  # one-time: every accepted message spends a credit in the fake's ledger
N = 100  # assignments per burst
PEOPLE = 5
GIVEN = 1000  # credits each salesperson has, at the fake and in leadpush (never the limit)
WINDOWS = {"before": (0.0, 0.0), "after": (30.0, 10.0)}  # (WeChat, WeCom) digest windows at full scale
CLICKS_SECONDS = 60.0  # the clicks burst at full scale
TRANSFER_HOURS = 1.0  # the rule's threshold: the held leads were assigned 2 h ago, the moved ones are safe for 1 h
SCENARIOS = ("clicks", "batch", "transfer")
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- credits:begin -->", "<!-- credits:end -->"


# --------------------------------------------------------------------------------------
# Setting up
# --------------------------------------------------------------------------------------


def give_credits(fake_url: str, db_url: str, users: list[BenchUser]) -> None:
    """GIVEN credits to each: at the fake (its ledger) and in leadpush (what the mini program reported)."""
    from leadpush.db import Database
    from leadpush.wechat.models import WechatSubscription

    with httpx.Client(base_url=fake_url, timeout=30) as http:
        for u in users:
            body = {"openid": u.wechat_openid, "templateId": TEMPLATE, "count": GIVEN}
            http.post("/_fake/credits", json=body).raise_for_status()
    db = Database(db_url)
    now = datetime.now(UTC)
    try:
        with db.write() as session:
            session.add_all(
                WechatSubscription(user_id=u.id, template_id=TEMPLATE, credits=GIVEN, updated_at=now) for u in users
            )
    finally:
        db.dispose()


def credits_left(fake_url: str, users: list[BenchUser]) -> int:
    with httpx.Client(base_url=fake_url, timeout=30) as http:
        return sum(
            http.get("/_fake/credits", params={"openid": u.wechat_openid, "templateId": TEMPLATE}).json()["count"]
            for u in users
        )


def fake_messages(fake_url: str, users: list[BenchUser]) -> dict[str, list[dict[str, Any]]]:
    openids = {u.wechat_openid for u in users}
    with httpx.Client(base_url=fake_url, timeout=60) as http:
        subscribe = http.get("/_fake/messages", params={"kind": "subscribe"}).json()["messages"]
        wecom = http.get("/_fake/messages", params={"kind": "wecom"}).json()["messages"]
    return {"subscribe": [m for m in subscribe if m["openid"] in openids], "wecom": wecom}


def ledger(db_url: str, users: list[BenchUser]) -> dict[str, Any]:
    """What leadpush recorded for these people: notifications, and deliveries per channel and status."""
    from leadpush.db import Database
    from leadpush.notify.models import Delivery, Notification

    ids = [u.id for u in users]
    db = Database(db_url)
    try:
        with db.read() as session:
            notes = session.scalar(
                select(func.count()).select_from(Notification).where(Notification.recipient_id.in_(ids))
            )
            rows = session.execute(
                select(Delivery.channel, Delivery.status, func.count())
                .where(Delivery.recipient_id.in_(ids))
                .group_by(Delivery.channel, Delivery.status)
            ).all()
    finally:
        db.dispose()
    deliveries: dict[str, dict[str, int]] = {}
    for channel, status, count in rows:
        deliveries.setdefault(channel, {})[status] = count
    return {"notifications": notes or 0, "deliveries": deliveries}


def unsettled(book: dict[str, Any]) -> int:
    """Push deliveries still to go (pending, possibly held for a digest window, or being sent)."""
    return sum(
        n
        for channel in ("wechat", "wecom")
        for status, n in book["deliveries"].get(channel, {}).items()
        if status in ("pending", "sending")
    )


def wait_settled(db_url: str, users: list[BenchUser], expected: int, timeout: float) -> dict[str, Any]:
    """Until leadpush has written `expected` notifications for them and sent (or given up) every push."""
    deadline = time.monotonic() + timeout
    while True:
        book = ledger(db_url, users)
        if (book["notifications"] >= expected and not unsettled(book)) or time.monotonic() > deadline:
            return book
        time.sleep(0.5)


def moved_by_transfer(db_url: str, leads: list[int]) -> int:
    from leadpush.assignment.models import Assignment
    from leadpush.db import Database

    db = Database(db_url)
    try:
        with db.read() as session:
            return (
                session.scalar(
                    select(func.count(func.distinct(Assignment.customer_id))).where(
                        Assignment.customer_id.in_(leads), Assignment.via == "auto_transfer"
                    )
                )
                or 0
            )
    finally:
        db.dispose()


# --------------------------------------------------------------------------------------
# The bursts
# --------------------------------------------------------------------------------------


async def clicks(dep, manager: BenchUser, people: list[BenchUser], leads: list[int], seconds: float) -> None:  # noqa: ANN001
    conns = [HttpConnection(*host_port(s.url)) for s in dep.api]
    started = time.monotonic()
    for i, lead in enumerate(leads):
        await asyncio.sleep(max(0.0, started + i * seconds / len(leads) - time.monotonic()))
        status, body = await conns[i % len(conns)].request(
            "PATCH", f"/api/customers/{lead}/assign", {"assignedTo": people[i % len(people)].id}, manager.token
        )
        if status != 200:
            raise RuntimeError(f"assign failed: {status} {body}")
    for c in conns:
        c.close()


async def batches(dep, manager: BenchUser, people: list[BenchUser], leads: list[int]) -> None:  # noqa: ANN001
    conns = [HttpConnection(*host_port(s.url)) for s in dep.api]
    size = len(leads) // len(people)
    for i, person in enumerate(people):
        chunk = leads[i * size : (i + 1) * size]
        status, body = await conns[i % len(conns)].request(
            "POST", "/api/customers/batch-assign", {"customerIds": chunk, "assignedTo": person.id}, manager.token
        )
        if status != 200:
            raise RuntimeError(f"batch-assign failed: {status} {str(body)[:300]}")
    for c in conns:
        c.close()


def backdate(db_url: str, leads: list[int], hours: float) -> None:
    """The leads were assigned `hours` ago (and nobody followed up)."""
    from datetime import timedelta

    from sqlalchemy import update

    from leadpush.db import Database
    from leadpush.leads.models import Customer

    db = Database(db_url)
    try:
        with db.write() as session:
            when = datetime.now(UTC) - timedelta(hours=hours)
            session.execute(update(Customer).where(Customer.id.in_(leads)).values(assigned_at=when))
    finally:
        db.dispose()


def transfer(dep, admin: BenchUser, team: str, leads: list[int]) -> float:  # noqa: ANN001
    """Create the rule (the held leads are overdue at once); wait until its run has moved them all."""
    with sync_client(dep.api[0].url, admin.token) as http:
        check(
            http.post(
                "/api/auto-transfer/rules",
                json={
                    "name": f"{TRANSFER_HOURS:g} 小时未跟进轮流分配",
                    "team": team,
                    "condition": "no_follow_up_after_assign",
                    "thresholdHours": TRANSFER_HOURS,
                    "action": "round_robin",
                },
            )
        )
    deadline = time.monotonic() + 90
    while moved_by_transfer(dep.db_url, leads) < len(leads) and time.monotonic() < deadline:
        time.sleep(0.25)
    return time.time()


def scenario(name: str, dep, fake_url: str, scale: float, window: float) -> dict[str, Any]:  # noqa: ANN001
    team = f"C{uuid.uuid4().hex[:6]}"
    manager, people = make_team(dep.db_url, PEOPLE, team=team, wechat=True)
    give_credits(fake_url, dep.db_url, people)
    started = time.time()
    if name == "clicks":
        leads = make_leads(dep.db_url, N)
        asyncio.run(clicks(dep, manager, people, leads, CLICKS_SECONDS * scale))
    elif name == "batch":
        leads = make_leads(dep.db_url, N)
        asyncio.run(batches(dep, manager, people, leads))
    else:
        holders = make_users(
            dep.db_url,
            [{"name": f"持有人{team}-{i}", "role": "sales", "team": team, "capacity": 0} for i in range(PEOPLE)],
        )
        (admin,) = make_users(dep.db_url, [{"name": f"管理员{team}", "role": "admin", "team": None}])
        leads = [lead for h in holders for lead in make_leads(dep.db_url, N // PEOPLE, owner_id=h.id)]
        backdate(dep.db_url, leads, 2 * TRANSFER_HOURS)
        started = time.time()
        transfer(dep, admin, team, leads)
    burst_end = time.time()
    # Written by then: every notice of the clicks; at least one per person for a batch or a transfer run.
    book = wait_settled(dep.db_url, people, N if name == "clicks" else PEOPLE, timeout=window + 60)
    # A digest may still be waiting for its window when the last one of a person's notices was written.
    got = fake_messages(fake_url, people)
    spent = PEOPLE * GIVEN - credits_left(fake_url, people)
    received = sorted(m["receivedAt"] for m in got["subscribe"])
    wechat = book["deliveries"].get("wechat", {})
    return {
        "scenario": name,
        "assignments": N,
        "notifications": book["notifications"],
        "credits_spent": spent,
        "wechat_messages": len(got["subscribe"]),
        "wechat_deliveries": wechat,
        "merged": wechat.get("merged", 0),
        "per_person": sorted(sum(1 for m in got["subscribe"] if m["openid"] == u.wechat_openid) for u in people),
        "burst_seconds": round(burst_end - started, 1),
        "last_message_after_burst_seconds": round(max(0.0, received[-1] - burst_end), 1) if received else None,
        "unsettled": unsettled(book),
    }


def bench(kind: str, fake_url: str, scale: float, names: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": kind, "modes": {}}
    for mode, (wechat_window, wecom_window) in WINDOWS.items():
        env = {
            **channel_env(fake_url),
            "LEADPUSH_WECHAT_TEMPLATE_ID": TEMPLATE,
            "LEADPUSH_DIGEST_WINDOW_WECHAT": f"{wechat_window * scale:g}",
            "LEADPUSH_DIGEST_WINDOW_WECOM": f"{wecom_window * scale:g}",
        }
        with deployment(kind, env) as dep:
            out["deployment"] = dep.describe()
            results = []
            for name in names:
                r = scenario(name, dep, fake_url, scale, wechat_window * scale)
                results.append(r)
                log(
                    f"{kind} {mode} {name}: {r['credits_spent']} credits for {N} assignments"
                    f" ({r['notifications']} notifications, {r['merged']} merged)"
                )
            out["modes"][mode] = {
                "windows": {"wechat": wechat_window * scale, "wecom": wecom_window * scale},
                "results": results,
            }
    return out


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


def rows(results: list[dict[str, Any]]) -> list[list[Any]]:
    out = []
    for r in results:
        before = {s["scenario"]: s for s in r["modes"]["before"]["results"]}
        after = {s["scenario"]: s for s in r["modes"]["after"]["results"]}
        for name in before:
            b, a = before[name], after.get(name)
            saved = None if a is None or not b["credits_spent"] else 1 - a["credits_spent"] / b["credits_spent"]
            out.append(
                [
                    f"{r['backend']}: {name}",
                    b["notifications"],
                    b["credits_spent"],
                    None if a is None else a["notifications"],
                    None if a is None else a["credits_spent"],
                    None if a is None else a["merged"],
                    None if saved is None else f"{saved:.0%}",
                    None if a is None else "–".join(map(str, (a["per_person"][0], a["per_person"][-1]))),
                    None if a is None else a["last_message_after_burst_seconds"],
                ]
            )
    return out


HEADERS = [
    "burst of 100 assignments",
    "before: notifications",
    "before: credits",
    "after: notifications",
    "after: credits",
    "after: WeChat deliveries merged",
    "credits saved",
    "after: messages per person",
    "after: last message s after the burst",
]


def report(results: list[dict[str, Any]]) -> None:
    print_table("WeChat credits per 100 assignments (from the fake's credit ledger)", HEADERS, rows(results))


def git_head() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        return head.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _pairs(r: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(after, before) per scenario of one backend's results."""
    return list(zip(r["modes"]["after"]["results"], r["modes"]["before"]["results"], strict=True))


def section(results: list[dict[str, Any]], scale: float, meta: dict[str, Any]) -> str:
    lines = [
        BEGIN,
        "## WeChat credits per 100 assignments, before and after the digest windows (issue 16)",
        "",
        "Each WeChat subscribe message costs the salesperson one credit (one tap on “allow” in the mini",
        "program). leadpush talks to the fake WeChat with a one-time template; the credits spent are read",
        "from the fake's credit ledger (given − left). Three bursts of 100 assignments, each to 5 fresh",
        "salespeople with plenty of credits (so nothing falls back to WeCom):",
        "",
        "- **clicks**: a manager assigns 100 leads one at a time, round robin over the 5, evenly over ~60 s;",
        "- **batch**: 100 leads in 5 batch-assign requests of 20, one per person, back to back;",
        "- **transfer**: a new automatic-transfer rule (no follow-up within 1 h, round robin over the team)",
        "  moves 100 overdue leads held by 5 others to the 5 in its first run.",
        "",
        "**before** = digest windows 0 (`LEADPUSH_DIGEST_WINDOW_WECHAT=0`, `LEADPUSH_DIGEST_WINDOW_WECOM=0`:",
        "every notice on its own); **after** = the default windows (30 s WeChat, 10 s WeCom). The last",
        "column: when the last WeChat message of the burst arrived, after the burst ended (the digest of the",
        "last notices waits for its window).",
        "",
        "Before issue 16 as a whole (this script at commit 3480b06, where an automatic transfer run still",
        "told each person once per lead): clicks 100 credits, batch 5, transfer run 100 — on both databases.",
        "Since issue 16 a run tells each person once for all it moved (one notice for what they gained),",
        "so its **before** column here is already 5; the windows then have nothing left to fold.",
        "",
    ]
    if scale != 1:
        lines += [
            f"Time is scaled by {scale:g} to keep the run short: the clicks span {CLICKS_SECONDS * scale:.0f} s and the",
            f"windows are {30 * scale:.1f} s / {10 * scale:.1f} s — the same number of clicks per window as at full",
            "scale, so the same credits (`--scale 1` runs the real figures, about 6 minutes per database).",
            "",
        ]
    lines += ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows(results)]
    same = all(a["credits_spent"] == b["credits_spent"] for r in results for a, b in _pairs(r))
    lines.append("")
    if any(a["notifications"] == b["notifications"] for r in results for a, b in _pairs(r)):
        lines += [
            "Where “after: notifications” equals “before”, every assignment is still its own notification in the",
            "ledger (and in-app); the credits are saved by the window, which folds a person's waiting WeChat",
            "deliveries into one message (the others `merged`). A transfer run that takes longer than one",
            "window on a busy machine costs one message more per person.",
            "",
        ]
    cores = os.cpu_count() or 1
    if meta["load_before"] > 1.5 * cores:
        lines += [
            "> Measured while other test suites ran on the same machine (1-minute load average"
            f" {meta['load_before']:.1f} on {cores} cores):",
            "> the credits are counts and do not depend on it, but the time columns (and a slow transfer run",
            "> spilling into a second window) do.",
            "",
        ]
    if same:
        lines += [
            "> The windows changed nothing in this build: it has no time-window digest yet (measured",
            "> before the digest was merged). The “before” figures are what issue 16 starts from.",
            "",
        ]
    lines += [
        "Re-run this section alone: `.venv/bin/python -m benchmarks.credits` (`--help` for the options).",
        "",
        f"_Measured {meta['date']} at {meta['git']}, took {meta['seconds']} s; 1-minute load average"
        f" {meta['load_before']:.2f} before, {meta['load_after']:.2f} after._",
        END,
    ]
    return "\n".join(lines) + "\n"


def write_doc(text: str, path: Path = DOC) -> None:
    """Replace this benchmark's marked section of the page (or add it at the end)."""
    page = path.read_text()
    marked = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
    if marked.search(page):
        page = marked.sub(lambda _m: text, page, count=1)
    else:
        page = page.rstrip("\n") + "\n\n" + text
    path.write_text(page)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.33, help="time scale of the bursts and windows (1 = real)")
    parser.add_argument("--no-doc", action="store_true", help="do not write the section of docs/benchmarks.md")
    parser.add_argument("--render", type=Path, help="only rewrite the section from a --json file of an earlier run")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.render is not None:
        saved = json.loads(args.render.read_text())
        report(saved["results"])
        write_doc(section(saved["results"], saved["scale"], saved["meta"]))
        return dict(saved)
    names = ("clicks", "transfer") if args.quick else SCENARIOS
    started, load_before = time.monotonic(), load_average()[0]
    results = []
    with scratch_dir() as workdir:
        fake = fake_wechat_service(workdir).start("/_fake/stats")
        try:
            for kind in backends(args.backend):
                results.append(bench(kind, fake.url, args.scale, names))
        finally:
            fake.stop()
    report(results)
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": git_head(),
        "seconds": round(time.monotonic() - started, 1),
        "load_before": load_before,
        "load_after": load_average()[0],
    }
    out = {"name": "credits", "quick": args.quick, "scale": args.scale, "results": results, "meta": meta}
    if not args.no_doc and not args.quick:
        write_doc(section(results, args.scale, meta))
        log(f"wrote the credits section of {DOC.relative_to(ROOT)}")
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
