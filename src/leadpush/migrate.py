"""Apply the Alembic migrations shipped inside the package."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text

from leadpush.db import make_engine

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)


@contextmanager
def _quiet_alembic() -> Iterator[None]:
    """Alembic logs seven plugin lines when first imported and its DDL mode on every run, all at INFO;
    an operator needs none of it (what was applied is logged once, below)."""
    logger = logging.getLogger("alembic")
    before = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(before)


def alembic_config(url: str) -> Config:
    with _quiet_alembic():
        from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _current(connection: Connection) -> tuple[str, ...]:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_heads()


@contextmanager
def _sqlite_foreign_keys_deferred(connection: Connection) -> Iterator[None]:
    """SQLite: foreign keys off while the migrations run (SQLite's documented way to change a schema).

    Alembic's batch mode rebuilds a table (create a copy, DROP the old one, rename the copy). With foreign
    keys enforced, that DROP deletes every row first: ON DELETE CASCADE children (api_tokens) are wiped and
    any other child row (a lead's owner) makes the DROP fail. The pragma only takes effect outside a
    transaction, so it is set on the raw connection before BEGIN; `_check_sqlite_foreign_keys` checks the
    result before the commit.
    """
    if connection.dialect.name != "sqlite":
        yield
        return
    raw = connection.connection.dbapi_connection
    assert raw is not None
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


def _check_sqlite_foreign_keys(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
        if broken:
            raise RuntimeError(f"database migration would break foreign keys: {broken[:5]}")


def upgrade(url: str, revision: str = "head") -> list[str]:
    """Upgrade the schema; safe when several processes start at once.

    Returns the revisions applied, oldest first ("0001 initial schema"); empty when the database was
    already up to date. PostgreSQL: a transaction-level advisory lock makes concurrent upgraders take
    turns. SQLite: the migration runs in a BEGIN IMMEDIATE transaction, a write lock from the start, with
    foreign keys checked once at its end (see `_sqlite_foreign_keys_deferred`).
    """
    with _quiet_alembic():
        from alembic import command
        from alembic.script import ScriptDirectory

        cfg = alembic_config(url)
        engine = make_engine(url)
        try:
            with engine.connect() as connection, _sqlite_foreign_keys_deferred(connection):
                with connection.execution_options(sqlite_begin="IMMEDIATE").begin():
                    if connection.dialect.name == "postgresql":
                        connection.execute(text("SELECT pg_advisory_xact_lock(7300)"))
                    cfg.attributes["connection"] = connection
                    before = _current(connection)
                    command.upgrade(cfg, revision)
                    after = _current(connection)
                    _check_sqlite_foreign_keys(connection)
        finally:
            engine.dispose()
        if before == after:
            return []
        script = ScriptDirectory.from_config(cfg)
        applied = [f"{rev.revision} {rev.doc}".strip() for rev in script.iterate_revisions(after, before or "base")]
    applied.reverse()
    log.info("已应用数据库迁移：%s", "、".join(applied))
    return applied


def pending(url: str) -> list[str]:
    """Revisions this code has that the database lacks (all of them for an empty database).

    A database at a revision this code does not know (a newer release's) has nothing pending here.
    """
    with _quiet_alembic():
        from alembic.script import ScriptDirectory
        from alembic.script.revision import RevisionError

        engine = make_engine(url)
        try:
            with engine.connect() as connection:
                current = _current(connection)
        finally:
            engine.dispose()
        script = ScriptDirectory.from_config(alembic_config(url))
        try:
            missing = list(script.iterate_revisions("heads", current or "base"))
        except RevisionError:
            return []
    # A revision's title may wrap in its docstring: one line each, for the one-line start-up message.
    return [" ".join(f"{rev.revision} {rev.doc}".split()) for rev in reversed(missing)]
