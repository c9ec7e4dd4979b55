"""Operations endpoints: liveness, readiness (database and Redis) and Prometheus metrics."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz(request: Request) -> dict[str, object]:
    """The process is up (it does not look at its dependencies)."""
    return {"status": "ok", "roles": sorted(request.app.state.runtime.roles)}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Ready to serve: the database answers, and Redis too when configured (503 otherwise)."""
    ctx = request.app.state.ctx
    runtime = request.app.state.runtime

    def db_ok() -> bool:
        try:
            with ctx.db.read() as session:
                session.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001
            return False

    checks = {"database": await to_thread.run_sync(db_ok)}
    if ctx.settings.redis_url:
        checks["redis"] = await runtime.bus.ping()
    ready = all(checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )


@router.get("/metrics")
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
