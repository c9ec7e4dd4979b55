"""The app's routes, added flat (`include_flat`) and the hot ones tried first (`serve_first`) for speed, serve
and document exactly what the routers, included the usual way (`app.include_router`) in the order declared,
did: the same /openapi.json, the same route for every method and path, the same 404 / 405 / redirect."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.exceptions import HTTPException

import leadpush.app as app_module
from leadpush.app import create_app
from leadpush.config import Settings
from leadpush.context import AppContext

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
PARAM = re.compile(r"\{[^}]+\}")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> AppContext:
    path: Path = tmp_path_factory.mktemp("route-flat")
    return AppContext.from_settings(Settings(database_url=f"sqlite:///{path}/unused.db"))


@pytest.fixture(scope="module")
def apps(ctx: AppContext) -> tuple[FastAPI, FastAPI]:
    """(as served, as the routers were included before: nested, in the order declared)."""
    served = create_app(ctx)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            app_module,
            "include_flat",
            lambda app, router, responses=None: app.include_router(router, responses=responses),
        )
        patch.setattr(app_module, "serve_first", lambda app, paths: None)
        included = create_app(ctx)
    return served, included


def test_route_openapi_is_byte_for_byte_what_the_included_routers_publish(apps):
    served, included = apps
    assert json.dumps(served.openapi(), ensure_ascii=False) == json.dumps(included.openapi(), ensure_ascii=False)


def test_route_the_hot_path_is_the_first_route_tried(apps):
    served, _ = apps
    assert getattr(served.router.routes[0], "path", None) == "/api/customers/{customer_id:int}/assign"


def sample_paths(*apps: FastAPI) -> list[str]:
    """A concrete path for every route's template (each parameter "7"), with and without a trailing slash,
    and a few that no route has."""
    templates = {getattr(route, "path", "") for app in apps for route in app.routes}
    concrete = {PARAM.sub("7", t) for t in templates if t}
    extra = {"/", "/api", "/api/customers/x/assign", "/api/customers/7/assign/", "/nowhere", "/api/nowhere"}
    return sorted(
        concrete | {p.rstrip("/") + "/" for p in concrete} | {p.rstrip("/") for p in concrete if p != "/"} | extra
    )


async def outcome(app: FastAPI, method: str, path: str) -> tuple[Any, ...]:
    """Which endpoint the router hands the request to (or the 404 / 405 / redirect it answers instead).
    The request has no token and no body, so an endpoint that is reached stops early, the same way in both."""
    scope: dict[str, Any] = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "scheme": "http",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
        "app": app,
        "state": {},
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        await app.router(scope, receive, send)
        ended: tuple[Any, ...] = ("sent",)
    except HTTPException as exc:
        ended = ("http", exc.status_code, (exc.headers or {}).get("Allow"))
    except Exception as exc:  # noqa: BLE001 - an endpoint reached without a token or a body, stopping early
        ended = ("raised", type(exc).__name__)
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    answered = None
    if start is not None:
        headers = dict(start.get("headers") or [])
        answered = (start["status"], headers.get(b"location"), headers.get(b"allow"))
    route = scope.get("route")
    endpoint = scope.get("endpoint")
    return (
        getattr(endpoint, "__qualname__", None),
        getattr(endpoint, "__module__", None),
        getattr(route, "path", None),
        sorted(getattr(route, "methods", None) or ()),
        ended,
        answered,
    )


def test_route_every_method_and_path_goes_where_it_went_with_included_routers(apps):
    served, included = apps
    paths = sample_paths(served, included)
    assert "/api/customers/7/assign" in paths and "/api/customers/import" in paths

    async def compare() -> list[str]:
        differences = []
        for path in paths:
            for method in METHODS:
                now, before = await outcome(served, method, path), await outcome(included, method, path)
                if now != before:
                    differences.append(f"{method} {path}: {now} != {before}")
        return differences

    assert asyncio.run(compare()) == []
