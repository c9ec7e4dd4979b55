"""Apply the Alembic migrations shipped inside the package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from leadpush.db import make_engine


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the schema; safe when several processes start at once.

    PostgreSQL: a transaction-level advisory lock makes concurrent upgraders take turns. SQLite: the
    migration runs in a BEGIN IMMEDIATE transaction, which is a write lock from the start.
    """
    engine = make_engine(url)
    try:
        with engine.execution_options(sqlite_begin="IMMEDIATE").begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(7300)"))
            cfg = alembic_config(url)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()
