"""Watching the statements an engine runs: for tests that count or read them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from leadpush.context import AppContext


class Statements:
    """Every statement the engine runs while `on` is set (whitespace folded, the first 120 characters)."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.on = False
        self.seen: list[str] = []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if self.on:
            self.seen.append(" ".join(statement.split())[:120])

    def __enter__(self) -> Statements:
        event.listen(self.ctx.db.engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.ctx.db.engine, "before_cursor_execute", self)
