"""The assignment answer without FastAPI's second pass (issue 17: CPU per assignment).

For a sync route FastAPI revalidates the returned object against `response_model` in another trip to a worker
thread, and runs each plain `def` dependency in a worker thread too. The assignment routes now hand FastAPI the
bytes of the same serializer, and the dependencies (and the sign-in before the body) check a token this process
holds a recent copy of on the event loop: one thread for the route's own work. What the client sees is the same
JSON, the same checks.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import pytest
from support.api import Api, ok
from support.databases import DATABASES, database_url
from support.servers import FakeClock, ServerThread, make_settings
from support.statements import PerRequest

from leadpush.app import create_app
from leadpush.assignment.schemas import AssignedCustomer
from leadpush.context import AppContext
from leadpush.migrate import upgrade
from leadpush.schemas import Envelope

_hops: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("leadpush_test_hops", default=None)


@pytest.fixture(scope="module", params=DATABASES)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    kind = request.param
    gen = database_url(kind, str(tmp_path_factory.mktemp(f"answer-{kind}")))
    url = next(gen)
    upgrade(url)
    ctx = AppContext.from_settings(make_settings(url, auth_cache_seconds=60), clock=FakeClock())
    app = PerRequest(create_app(ctx, roles=frozenset({"api"})), _hops)
    original = anyio.to_thread.run_sync

    async def counting(func: Any, *args: Any, **kwargs: Any) -> Any:
        seen = _hops.get()
        if seen is not None:
            seen.append(getattr(getattr(func, "func", func), "__name__", type(func).__name__))
        return await original(func, *args, **kwargs)

    anyio.to_thread.run_sync = counting  # type: ignore[assignment]
    server = ServerThread(app, ws_max_size=ctx.settings.ws_max_message_bytes).start()
    try:
        yield ctx, server, app
    finally:
        server.stop()
        anyio.to_thread.run_sync = original  # type: ignore[assignment]
        ctx.db.dispose()
        gen.close()


def test_an_assignment_takes_at_most_one_thread_and_answers_what_the_response_model_says(served: tuple) -> None:
    ctx, server, app = served
    api = Api(url=server.url, ctx=ctx)
    try:
        manager = api.user("王经理", "manager", "A")
        alice = api.user("李丽", "sales", "A", wechat_openid="o-alice")
        bob = api.user("赵强", "sales", "A")
        lead = api.lead(manager, assignedTo=alice.id)["id"]
        ok(api.client(manager).patch(f"/api/customers/{lead}/assign", json={"assignedTo": bob.id}))  # token copied
        before = len(app.requests)
        response = api.client(manager).patch(f"/api/customers/{lead}/assign", json={"assignedTo": alice.id})
        [(what, hops)] = [r for r in app.requests[before:] if r[0].endswith("/assign")]
        # SQLite: the route's work in one worker thread; PostgreSQL: none, it runs on the event loop (issue 17).
        assert hops == (["_assign"] if ctx.db.is_sqlite else []), hops
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        # The bytes are the response model's own serialization of what they say.
        model = Envelope[AssignedCustomer].model_validate_json(response.content)
        assert Envelope[AssignedCustomer].__pydantic_serializer__.to_json(model, by_alias=True) == response.content
        body = response.json()
        assert body["success"] is True and body["message"] == "分配成功"
        data = body["data"]
        assert data["ownerId"] == alice.id and data["ownerName"] == "李丽" and data["inPool"] is False
        assert data["notificationData"]["toUserId"] == alice.id and data["notificationData"]["openid"] == "o-alice"
        fresh = ok(api.client(manager).get(f"/api/customers/{lead}"))
        assert {k: v for k, v in data.items() if k != "notificationData"} == fresh | {"firstFollowUpAt": None}

        # Unchanged, batch: the same envelope and message as before.
        again = ok(api.client(manager).patch(f"/api/customers/{lead}/assign", json={"assignedTo": alice.id}))
        assert again["ownerId"] == alice.id and again["notificationData"] is None
        batch = api.client(manager).post(
            "/api/customers/batch-assign", json={"customerIds": [lead], "assignedTo": bob.id}
        )
        assert batch.status_code == 200 and batch.json()["message"] == "已分配 1 条，未变化 0 条，失败 0 条"
        assert [c["ownerId"] for c in batch.json()["data"]["customers"]] == [bob.id]
    finally:
        api.close()


def test_a_wrong_or_missing_token_is_still_refused(served: tuple) -> None:
    ctx, server, _app = served
    api = Api(url=server.url, ctx=ctx)
    try:
        manager = api.user("王经理二", "manager", "A")
        lead = api.lead(manager)["id"]
        anonymous = api.client(None)
        for client, code in ((anonymous, "unauthorized"), (api.client("lp_not-a-token"), "invalid_token")):
            r = client.patch(f"/api/customers/{lead}/assign", json={"assignedTo": manager.id})
            assert r.status_code == 401 and r.json()["code"] == code
            r = client.get(f"/api/customers/{lead}")
            assert r.status_code == 401 and r.json()["code"] == code
    finally:
        api.close()
