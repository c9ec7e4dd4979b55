"""The `leadpush` command: serve, manage users, run transfers, apply migrations, fake WeChat."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from leadpush.config import Settings
from leadpush.startup import StartupError, bind_port, database_errors, load_settings, lock_sqlite

app = typer.Typer(help="leadpush：线索分配与通知服务", no_args_is_help=True, add_completion=False)
user_app = typer.Typer(help="用户管理", no_args_is_help=True)
db_app = typer.Typer(help="数据库迁移", no_args_is_help=True)
transfer_app = typer.Typer(help="自动流转", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(db_app, name="db")
app.add_typer(transfer_app, name="transfer")

ALL_ROLES = ("api", "worker", "scheduler")


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """A start-up problem is one line on stderr and a non-zero exit, never a traceback."""
    try:
        yield
    except StartupError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


def _settings() -> Settings:
    with _one_line_errors():
        return load_settings()


def _prepare_database(settings: Settings) -> list[str]:
    """Apply pending migrations; returns what was applied. An unreachable database is one line."""
    from leadpush.migrate import upgrade

    with _one_line_errors(), database_errors(settings.database_url):
        return upgrade(settings.database_url)


def _check_database(settings: Settings) -> None:
    """For `serve --no-migrate`: the database answers and its schema is this release's."""
    from leadpush.migrate import pending

    with _one_line_errors(), database_errors(settings.database_url):
        missing = pending(settings.database_url)
        if missing:
            raise StartupError(
                f"数据库结构不是最新（缺少迁移 {'、'.join(missing)}）：请先运行 `leadpush db upgrade`，或去掉 --no-migrate"
            )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="监听地址")] = None,
    port: Annotated[int | None, typer.Option(help="监听端口")] = None,
    role: Annotated[
        list[str] | None, typer.Option(help="只运行指定角色：api / worker / scheduler（可重复）；默认全部")
    ] = None,
    migrate: Annotated[bool, typer.Option(help="启动前执行数据库迁移")] = True,
) -> None:
    """启动服务（默认在一个进程内运行 api、worker、scheduler 三个角色）。"""
    import uvicorn

    from leadpush.app import create_app
    from leadpush.context import AppContext

    settings = _settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    roles = frozenset(role or ALL_ROLES)
    unknown = roles - set(ALL_ROLES)
    if unknown:
        raise typer.BadParameter(f"未知角色：{', '.join(sorted(unknown))}")
    host = host or settings.host
    port = port if port is not None else settings.port
    # Everything that can stop a start is checked before any role runs: the port, the SQLite
    # single-process lock, the database.
    with _one_line_errors():
        sock = bind_port(host, port)
        lock = lock_sqlite(settings)
    if migrate:
        _prepare_database(settings)
    else:
        _check_database(settings)
    ctx = AppContext.from_settings(settings)
    config = uvicorn.Config(
        create_app(ctx, roles=roles),
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_timeout,
        ws_max_size=settings.ws_max_message_bytes,
        # Long polls wait up to 30 s; do not let them hold a restart that long.
        timeout_graceful_shutdown=5,
        # The app trusts X-Forwarded-For from LEADPUSH_TRUSTED_PROXIES itself; uvicorn's own handling
        # (FORWARDED_ALLOW_IPS) would apply first and could trust peers the setting does not.
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    # uvicorn does not announce a socket it was handed; say where to find us.
    bound = sock.getsockname()[1]
    logging.getLogger("leadpush").info("监听 http://%s:%d", f"[{host}]" if ":" in host else host, bound)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if lock is not None:
            lock.close()
    if not server.started:
        raise typer.Exit(3)  # the application failed to start (uvicorn has logged why)


@user_app.command("create")
def user_create(
    name: Annotated[str, typer.Option(help="姓名")],
    role: Annotated[str, typer.Option(help="admin / manager / sales")],
    team: Annotated[str | None, typer.Option(help="团队")] = None,
    wechat_openid: Annotated[str | None, typer.Option(help="小程序 openid")] = None,
    wecom_userid: Annotated[str | None, typer.Option(help="企业微信 userid")] = None,
    capacity: Annotated[int | None, typer.Option(help="最多持有的线索数")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="以 JSON 输出 id 与 token")] = False,
) -> None:
    """创建用户并生成 API 令牌（令牌只显示一次）。"""
    from leadpush.db import Database
    from leadpush.errors import ApiError
    from leadpush.users.service import create_user

    settings = _settings()
    _prepare_database(settings)
    db = Database(settings.database_url)
    try:
        with db.write() as session:
            user, token = create_user(
                session,
                name=name,
                role=role,
                team=team,
                wechat_openid=wechat_openid,
                wecom_userid=wecom_userid,
                capacity=capacity,
                create_missing_team=True,
            )
            user_id = user.id
    except ApiError as exc:
        typer.echo(f"错误：{exc.message}", err=True)
        raise typer.Exit(2) from exc
    finally:
        db.dispose()
    if as_json:
        typer.echo(
            json.dumps({"id": user_id, "name": name, "role": role, "team": team, "token": token}, ensure_ascii=False)
        )
    else:
        typer.echo(f"已创建用户 {name}（id={user_id}，角色={role}）\n令牌：{token}\n请妥善保存，令牌不会再次显示。")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """把数据库升级到最新结构。"""
    applied = _prepare_database(_settings())
    if applied:
        typer.echo(f"已升级数据库到 {applied[-1]}（应用了 {len(applied)} 个迁移：{'、'.join(applied)}）")
    else:
        typer.echo("数据库已是最新结构，无需升级")


@transfer_app.command("run")
def transfer_run(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="只列出将要流转的线索，不做修改")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="以 JSON 输出结果")] = False,
) -> None:
    """立即执行一次自动流转（手动触发）。"""
    from leadpush.transfer.cli import run_once

    settings = _settings()
    with _one_line_errors(), database_errors(settings.database_url):
        run_once(settings, dry_run=dry_run, as_json=as_json)


if __name__ == "__main__":
    app()
