"""/openapi.json, byte for byte, is the snapshot taken before the hot path's event-loop work was trimmed
(routes added flat, one dependency less): that work changed nothing the API documents.

When the API changes on purpose, write the snapshot again:
`PYTHONPATH=src:tests .venv/bin/python -m api.test_route_openapi_snapshot`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fastapi.responses import JSONResponse

from leadpush.app import create_app
from leadpush.config import Settings
from leadpush.context import AppContext

SNAPSHOT = Path(__file__).parent / "fixtures" / "route_openapi.json"


def published() -> bytes:
    """The bytes GET /openapi.json answers (its route renders `app.openapi()` so; nothing is started)."""
    path = tempfile.mkdtemp(prefix="leadpush-openapi-")
    ctx = AppContext.from_settings(Settings(database_url=f"sqlite:///{path}/unused.db"))
    try:
        return bytes(JSONResponse(create_app(ctx).openapi()).body)
    finally:
        ctx.db.dispose()


def test_route_openapi_json_is_the_snapshot_byte_for_byte():
    assert published() == SNAPSHOT.read_bytes()


if __name__ == "__main__":
    SNAPSHOT.write_bytes(published())
