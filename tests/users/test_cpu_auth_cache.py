"""The per-process copy of what a bearer token signs in with (leadpush.users.authcache, issue 17): used, and
never letting a revoked token, an ended session or a deactivated user through once this process changed it;
a change made elsewhere (another process) is seen within LEADPUSH_AUTH_CACHE_SECONDS."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text
from support import DATABASES, Api, running_stack, wipe
from support.api import ok, refused

from leadpush.users.authcache import install

LONG = 60.0  # long enough that only an invalidation can explain a refusal


def cache_of(api: Api):  # noqa: ANN201
    return install(api.ctx.db.engines, api.ctx.settings.auth_cache_seconds)


def stack(kind: str, tmp_path, seconds: float) -> Iterator[Api]:
    with running_stack(kind, str(tmp_path), auth_cache_seconds=seconds) as (ctx, server):
        wipe(ctx)
        client = Api(url=server.url, ctx=ctx)
        try:
            yield client
        finally:
            client.close()


@pytest.fixture(params=DATABASES)
def api(request, tmp_path) -> Iterator[Api]:
    yield from stack(request.param, tmp_path, LONG)


@pytest.fixture(params=DATABASES)
def short(request, tmp_path) -> Iterator[Api]:
    yield from stack(request.param, tmp_path, 0.5)


def test_a_token_is_read_once_then_served_from_the_copy(api):
    alice = api.user("李丽", "sales", "A")
    client = api.client(alice)
    ok(client.get("/api/me"))  # read, and its first use written (which drops the copies)
    ok(client.get("/api/me"))  # read again, kept
    loads = cache_of(api).loads
    for _ in range(5):
        assert ok(client.get("/api/me"))["id"] == alice.id
    assert cache_of(api).loads == loads


def test_revoked_tokens_are_refused_at_once_in_the_process_that_revoked_them(api):
    admin = api.user("管理员", "admin", None)
    alice = api.user("李丽", "sales", "A")
    ok(api.client(alice).get("/api/me"))
    ok(api.client(alice).get("/api/me"))  # now held as a copy
    ok(api.client(admin).post(f"/api/users/{alice.id}/tokens/revoke"))
    refused(api.client(alice).get("/api/me"), 401, "invalid_token")


def test_a_deactivated_user_is_refused_at_once(api):
    admin = api.user("管理员", "admin", None)
    alice = api.user("李丽", "sales", "A")
    ok(api.client(alice).get("/api/me"))
    ok(api.client(admin).patch(f"/api/users/{alice.id}", json={"active": False}))
    refused(api.client(alice).get("/api/me"), 401, "invalid_token")


def test_a_deleted_api_token_and_a_logged_out_session_are_refused_at_once(api):
    alice = api.user("李丽", "sales", "A")
    me = api.client(alice)
    created = ok(me.post("/api/tokens", json={"name": "脚本"}), 201)
    ok(api.client(created["token"]).get("/api/me"))
    ok(me.delete(f"/api/tokens/{created['id']}"))
    refused(api.client(created["token"]).get("/api/me"), 401, "invalid_token")


def test_a_role_change_applies_to_the_next_request(api):
    admin = api.user("管理员", "admin", None)
    alice = api.user("李丽", "sales", "A")
    assert ok(api.client(alice).get("/api/me"))["role"] == "sales"
    ok(api.client(admin).patch(f"/api/users/{alice.id}", json={"role": "manager"}))
    assert ok(api.client(alice).get("/api/me"))["role"] == "manager"


def test_a_revoke_made_by_another_process_is_seen_within_the_setting(short):
    api = short
    alice = api.user("李丽", "sales", "A")
    ok(api.client(alice).get("/api/me"))
    ok(api.client(alice).get("/api/me"))  # a copy for at most 0.5 s
    # Another process: its own engine and pool, which this process's listener does not see.
    other = create_engine(api.ctx.settings.database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with other.begin() as conn:
            conn.execute(
                text("UPDATE api_tokens SET revoked_at = :now WHERE user_id = :uid"),
                {"now": datetime.now(UTC).replace(tzinfo=None), "uid": alice.id},
            )
    finally:
        other.dispose()
    time.sleep(0.6)
    refused(api.client(alice).get("/api/me"), 401, "invalid_token")
