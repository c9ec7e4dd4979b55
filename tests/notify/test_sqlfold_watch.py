"""The per-process copies (tokens, rules) are dropped by every statement that writes a table they watch, however
often the same statement text runs (`leadpush.db.on_writes_to` judges each text once and keeps the verdict)."""

from __future__ import annotations

import re

from sqlalchemy import text

from leadpush.db import _VERDICTS_KEPT, Database, on_writes_to


def test_sqlfold_the_same_write_drops_the_copy_every_time_and_reads_never(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path}/w.db")
    dropped: list[int] = []
    try:
        with db.write() as session:
            session.execute(text("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)"))
            session.execute(text("CREATE TABLE other (id INTEGER PRIMARY KEY, users_seen TEXT)"))
        on_writes_to(db.engine, re.compile(r"\b(users)\b", re.IGNORECASE), lambda: dropped.append(1), "test.touched")
        with db.write() as session:
            for i in range(3):  # one text, three writes: dropped at each (and once more when the connection returns)
                session.execute(text("INSERT INTO users (name) VALUES (:n)"), {"n": f"u{i}"})
        assert len(dropped) == 4
        dropped.clear()
        with db.write() as session:
            for _ in range(3):
                session.execute(text("SELECT name FROM users"))  # a read
                session.execute(text("INSERT INTO other (users_seen) VALUES ('x')"))  # another table
        assert dropped == []
        # More texts than are kept: still judged right after the verdicts are let go.
        with db.write() as session:
            for i in range(_VERDICTS_KEPT + 5):
                session.execute(text(f"INSERT INTO other (users_seen) VALUES ('{i}')"))
            session.execute(text("INSERT INTO users (name) VALUES (:n)"), {"n": "last"})
        assert len(dropped) == 2
    finally:
        db.dispose()
