"""The background roles a process hosts next to (or instead of) the API: worker and scheduler."""

from __future__ import annotations

import logging

from leadpush.context import AppContext

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, ctx: AppContext, roles: frozenset[str]) -> None:
        self.ctx = ctx
        self.roles = roles

    async def start(self) -> None:
        log.info("leadpush roles: %s", ", ".join(sorted(self.roles)))

    async def stop(self) -> None:
        return None
