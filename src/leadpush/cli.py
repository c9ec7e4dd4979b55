"""The `leadpush` command: serve, manage users, run transfers, apply migrations, fake WeChat."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

import leadpush.models  # noqa: F401  (every table mapped for the one-shot commands too, so foreign keys resolve)
from leadpush.config import Settings
from leadpush.startup import StartupError, bind_port, database_errors, load_settings, lock_sqlite

app = typer.Typer(help="leadpush：线索分配与通知服务", no_args_is_help=True, add_completion=False)
user_app = typer.Typer(help="用户管理", no_args_is_help=True)
db_app = typer.Typer(help="数据库迁移", no_args_is_help=True)
transfer_app = typer.Typer(help="自动流转", no_args_is_help=True)
token_app = typer.Typer(help="API 令牌", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(db_app, name="db")
app.add_typer(transfer_app, name="transfer")
app.add_typer(token_app, name="token")

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
    from leadpush.wsprotocol import protocol_class

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
        ws=protocol_class(settings.ws_deflate_context_takeover, settings.ws_deflate_window_bits),
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
    login: Annotated[str | None, typer.Option("--login", help="登录名（手机号或工号），用于密码登录")] = None,
    password: Annotated[bool, typer.Option("--password", help="设置登录密码（提示输入两次）")] = False,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="从标准输入读取登录密码（一行）")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="以 JSON 输出 id 与 token")] = False,
) -> None:
    """创建用户并生成 API 令牌（令牌只显示一次）；可同时设置登录名和密码。"""
    from leadpush.db import Database
    from leadpush.errors import ApiError
    from leadpush.users.service import create_user

    secret = _read_password(password, password_stdin, login)
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
                login_name=login,
                password=secret,
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


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"错误：{message}", err=True)
    return typer.Exit(code)


def _prompt_twice(label: str) -> str:
    """A password typed twice, hidden; prompts go to stderr so that --json output stays clean."""
    first = typer.prompt(label, hide_input=True, err=True)
    if typer.prompt(f"再次输入{label}", hide_input=True, err=True) != first:
        raise _fail("两次输入的密码不一致")
    return first


def _read_password(prompt: bool, from_stdin: bool, login: str | None) -> str | None:
    """The password asked for by --password (typed twice, hidden) or --password-stdin (one line); None if
    neither. Checked against the policy before anything is written."""
    import sys

    from leadpush.errors import ApiError
    from leadpush.users.passwords import check_policy

    if prompt and from_stdin:
        raise _fail("--password 与 --password-stdin 只能选一个")
    if not (prompt or from_stdin):
        return None
    if from_stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
    else:
        secret = _prompt_twice("密码")
    if login is not None:
        try:
            check_policy(secret, login.strip())
        except ApiError as exc:
            raise _fail(exc.message) from exc
    return secret


@user_app.command("reset-password")
def user_reset_password(
    login: Annotated[str | None, typer.Option("--login", help="登录名")] = None,
    user_id: Annotated[int | None, typer.Option("--id", help="用户 id")] = None,
    generate: Annotated[bool, typer.Option("--generate", help="生成随机密码并显示一次")] = False,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="从标准输入读取新密码（一行）")] = False,
) -> None:
    """重置用户的登录密码：解除锁定，并结束该用户的全部登录会话（API 令牌不受影响）。"""
    import secrets

    from sqlalchemy import select

    from leadpush.clock import utcnow
    from leadpush.db import Database
    from leadpush.errors import ApiError
    from leadpush.notify.signals import Signals
    from leadpush.users.models import User
    from leadpush.users.passwords import check_policy
    from leadpush.users.service import get_user, set_password

    if (login is None) == (user_id is None):
        raise _fail("请用 --login 或 --id 指定一个用户")
    if generate and password_stdin:
        raise _fail("--generate 与 --password-stdin 只能选一个")
    settings = _settings()
    _prepare_database(settings)
    db = Database(settings.database_url)
    try:
        with db.read() as session:
            if login is not None:
                user = session.scalar(select(User).where(User.login_name == login.strip()))
            else:
                user = get_user(session, user_id or 0)
        if user is None:
            raise _fail(f"用户 {login if login is not None else user_id} 不存在")
        if user.login_name is None:
            raise _fail(f"用户 {user.name}（id={user.id}）还没有登录名：请先在控制台或 API 中设置登录名")
        if generate:
            secret = secrets.token_urlsafe(12)
            while secret.isdigit():  # the policy refuses all-digit passwords; practically never
                secret = secrets.token_urlsafe(12)
        elif password_stdin:
            secret = _read_password(False, True, None) or ""
        else:
            secret = _prompt_twice("新密码")
        check_policy(secret, user.login_name)
        with db.write() as session:
            row = session.get(User, user.id)
            if row is None:
                raise _fail(f"用户 {user.id} 不存在")
            # Another process's open sockets close at its next periodic check (LEADPUSH_SESSION_RECHECK_SECONDS).
            ended = set_password(session, Signals(), row, secret, utcnow())
            name, uid, login_name = row.name, row.id, row.login_name
    except ApiError as exc:
        raise _fail(exc.message) from exc
    finally:
        db.dispose()
    typer.echo(f"已重置 {name}（id={uid}，登录名={login_name}）的密码，解除了锁定，结束了 {ended} 个登录会话。")
    if generate:
        typer.echo(f"新密码：{secret}\n请妥善保存，密码不会再次显示。")


@token_app.command("issue")
def token_issue(
    user_id: Annotated[int, typer.Option("--user", help="用户 id")],
    name: Annotated[str, typer.Option("--name", help="令牌用途，如「ERP 对接」")],
    as_json: Annotated[bool, typer.Option("--json", help="以 JSON 输出")] = False,
) -> None:
    """为用户生成一个命名的 API 令牌（只显示一次），例如让被锁定的管理员重新进入控制台。"""
    from leadpush.db import Database
    from leadpush.errors import ApiError
    from leadpush.users.service import check_token_name, existing_user, issue_api_token

    settings = _settings()
    _prepare_database(settings)
    db = Database(settings.database_url)
    try:
        label = check_token_name(name)
        with db.write() as session:
            user = existing_user(session, user_id)
            if not user.active:
                raise ApiError(409, "user_inactive", f"用户 {user.name}（id={user.id}）已停用，不能生成令牌")
            token, row = issue_api_token(session, user, label)
            token_id, user_name = row.id, user.name
    except ApiError as exc:
        raise _fail(exc.message) from exc
    finally:
        db.dispose()
    if as_json:
        out = {"id": token_id, "userId": user_id, "name": label, "token": token}
        typer.echo(json.dumps(out, ensure_ascii=False))
    else:
        typer.echo(f"已为 {user_name}（id={user_id}）生成令牌「{label}」：{token}\n请妥善保存，令牌不会再次显示。")


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
