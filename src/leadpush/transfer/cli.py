"""`leadpush transfer run`: the manual trigger from a shell or an external cron."""

from __future__ import annotations

import json

import typer

from leadpush.config import Settings
from leadpush.context import AppContext
from leadpush.migrate import upgrade
from leadpush.transfer.engine import TransferBusy, run_transfer


def wake_workers(settings: Settings) -> None:
    """Tell running workers over Redis that there are new deliveries (without Redis they poll)."""
    if not settings.redis_url:
        return
    import redis

    try:
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2)
        client.publish(f"{settings.redis_prefix}:wake", json.dumps({"from": "cli"}))
        client.close()
    except redis.RedisError:
        pass  # workers poll the ledger anyway


def run_once(settings: Settings, *, dry_run: bool, as_json: bool) -> None:
    upgrade(settings.database_url)
    ctx = AppContext.from_settings(settings)
    try:
        report = run_transfer(ctx, "manual", dry_run=dry_run)
    except TransferBusy:
        typer.echo("自动流转正在其他进程中运行，请稍后再试", err=True)
        raise typer.Exit(3) from None
    finally:
        ctx.db.dispose()
    wake_workers(settings)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "runId": report.run_id,
                    "dryRun": report.dry_run,
                    "examined": report.examined,
                    "moved": report.moved,
                    "warned": report.warned,
                    "failed": report.failed,
                    "items": report.items,
                    "failures": report.failures,
                },
                ensure_ascii=False,
            )
        )
        return
    prefix = "演练：" if dry_run else ""
    typer.echo(
        f"{prefix}检查 {report.examined} 条，流转 {report.moved} 条，预警 {report.warned} 条，失败 {report.failed} 条"
    )
    for item in report.items[:50]:
        typer.echo(
            f"  #{item['customerId']} {item['customerName']}：{item['fromUserName']} → {item['toUserName'] or '公海'}"
        )
