"""Start-up checks that end in one Chinese line instead of a traceback.

Before `leadpush serve` starts any role it validates the settings, binds its port, takes the SQLite
single-process lock and reaches the database; each failure is a `StartupError` whose message says what
is wrong and how to fix it. The one-shot commands (`user create`, `db upgrade`, `transfer run`) use the
same messages.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from leadpush.config import Settings


class StartupError(Exception):
    """A problem a person must fix before leadpush can run; the message is the one line they read."""


# --------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------

# Fields whose value is never echoed back (it may be read over a shoulder or land in a CI log).
_HIDDEN = re.compile(r"secret|password")
_FIELD_HINTS = {"port": "必须是 1–65535 的整数"}
_TYPE_HINTS = {
    "int_parsing": "必须是整数",
    "int_type": "必须是整数",
    "int_from_float": "必须是整数",
    "float_parsing": "必须是数字",
    "float_type": "必须是数字",
    "bool_parsing": "必须是 true 或 false",
    "bool_type": "必须是 true 或 false",
    "json_invalid": "必须是合法的 JSON",
}
_BOUNDS = {"gt": "必须大于 {}", "ge": "不能小于 {}", "lt": "必须小于 {}", "le": "不能大于 {}"}
_BOUND_TYPES = {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}


def hide_password(url: str) -> str:
    """A URL as it may be shown: `scheme://user:***@host/...` (also for URLs SQLAlchemy cannot parse)."""
    return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", url)


def _hint(field: str, error: ErrorDetails) -> str:
    kind = str(error.get("type", ""))
    if field in _FIELD_HINTS and (kind in _TYPE_HINTS or kind in _BOUND_TYPES):
        return _FIELD_HINTS[field]
    if kind in _TYPE_HINTS:
        return _TYPE_HINTS[kind]
    if kind in _BOUND_TYPES:
        key = _BOUND_TYPES[kind]
        return _BOUNDS[key].format((error.get("ctx") or {}).get(key, "?"))
    if kind == "literal_error":
        allowed = typing.get_args(Settings.model_fields[field].annotation) if field in Settings.model_fields else ()
        return f"必须是 {' / '.join(map(str, allowed))} 之一" if allowed else "取值不在允许范围内"
    if kind == "value_error":
        return str(error.get("msg", "")).removeprefix("Value error, ")
    return f"取值无效（{error.get('msg', '')}）"


def settings_error_lines(exc: ValidationError) -> list[str]:
    """One Chinese line per bad LEADPUSH_* variable."""
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        loc = error.get("loc") or ()
        if not loc:  # a rule across several settings; its message names them
            lines.append(f"配置错误：{_hint('', error)}")
            continue
        field = str(loc[0])
        line = f"配置错误：LEADPUSH_{field.upper()} {_hint(field, error)}"
        value = error.get("input")
        if isinstance(value, str | int | float) and not _HIDDEN.search(field):
            shown = hide_password(str(value)) if field.endswith("_url") else str(value)
            line += f"（当前为 {shown}）"
        lines.append(line)
    return lines


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise StartupError("\n".join(settings_error_lines(exc))) from None


# --------------------------------------------------------------------------------------
# Database
# --------------------------------------------------------------------------------------


def _where(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite 文件 {parsed.database or '（内存）'}"
    return f"PostgreSQL {parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


def _reason(exc: BaseException) -> str:
    """The driver's own first line (e.g. "Connection refused", "password authentication failed")."""
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split("\n")[0].split())
    return text[:200]


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn a database that cannot be reached (or a URL it cannot use) into a StartupError."""
    try:
        yield
    except (ArgumentError, NoSuchModuleError) as exc:
        raise StartupError(
            f"配置错误：LEADPUSH_DATABASE_URL 无法使用（{hide_password(url)}）：{_reason(exc)}"
        ) from None
    except (DBAPIError, OSError) as exc:
        if make_url(url).get_backend_name() == "sqlite":
            fix = "请确认文件所在目录存在且可写、LEADPUSH_DATABASE_URL 正确"
        else:
            fix = "请确认数据库已启动、LEADPUSH_DATABASE_URL 中的地址、用户、密码和库名正确"
        raise StartupError(f"无法连接数据库（{_where(url)}）：{_reason(exc)}。{fix}") from None


# --------------------------------------------------------------------------------------
# Port
# --------------------------------------------------------------------------------------


def bind_port(host: str, port: int) -> socket.socket:
    """Bind and listen on host:port now, so a busy port is reported before any role starts.

    The socket is handed to uvicorn (`Server.run(sockets=[...])`); options as uvicorn sets them.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"端口 {port} 已被占用（{host}:{port}）：请停止占用它的程序（可用 `ss -ltnp` 查看），"
                "或用 LEADPUSH_PORT / --port 换一个端口"
            ) from None
        if exc.errno == errno.EACCES:
            raise StartupError(f"没有权限监听端口 {port}：请使用 1024 以上的端口（LEADPUSH_PORT / --port）") from None
        raise StartupError(
            f"无法监听 {host}:{port}（{exc.strerror}）：请检查 LEADPUSH_HOST / --host 是否为本机地址"
        ) from None
    except (OverflowError, socket.gaierror) as exc:
        sock.close()
        raise StartupError(f"无法监听 {host}:{port}（{exc}）：请检查 LEADPUSH_HOST / --host") from None
    sock.set_inheritable(True)
    return sock


# --------------------------------------------------------------------------------------
# One serving process per SQLite file (without Redis)
# --------------------------------------------------------------------------------------


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for PostgreSQL and in-memory databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def lock_sqlite(settings: Settings) -> IO[bytes] | None:
    """Without Redis, processes cannot wake each other, so a second one would silently miss pushes.

    The serving process holds an exclusive lock on `<db>.lock` for its lifetime (the kernel drops it
    when the process dies, also on kill -9); a second one is refused. Keep the returned file open.
    """
    path = sqlite_path(settings.database_url)
    if path is None or settings.redis_url:
        return None
    lock_path = path.with_name(path.name + ".lock")
    try:
        handle = open(lock_path, "ab")  # noqa: SIM115 - held until the process exits
    except OSError as exc:
        raise StartupError(
            f"无法使用 SQLite 数据库文件 {path}（{exc.strerror}）：请确认目录存在且可写，或修改 LEADPUSH_DATABASE_URL"
        ) from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StartupError(
            f"已有另一个 leadpush 进程在使用 {path}：没有 Redis 时一个 SQLite 文件只能由一个进程服务"
            "（否则会漏发通知）。请先停止它，或设置 LEADPUSH_REDIS_URL 后再运行多个进程"
        ) from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n".encode())
    handle.flush()
    return handle
