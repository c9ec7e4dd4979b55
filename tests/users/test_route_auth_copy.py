"""A token signed in from this process's copy (leadpush.users.authcache.from_copy) gives objects that look
exactly like those a read session loads and closes: the same values, identity, no pending change, the same
attributes left unloaded."""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect
from support.api import ok

from leadpush.users.authcache import from_copy
from leadpush.users.service import find_token


def looks(obj: Any) -> dict[str, Any]:
    state = inspect(obj)
    return {
        "values": {k: v for k, v in vars(obj).items() if k != "_sa_instance_state"},
        "key": state.key,
        "detached": state.detached,
        "modified": state.modified,
        "committed_state": dict(state.committed_state),
        "unloaded": set(state.unloaded),
        "expired_attributes": set(state.expired_attributes),
    }


def test_route_a_copy_signs_in_the_same_user_and_token_as_the_database(api):
    alice = api.user("李丽", "sales", "A")
    client = api.client(alice)
    ok(client.get("/api/me"))  # read, and its first use written (which drops the copies)
    ok(client.get("/api/me"))  # read again and kept
    ctx = api.ctx
    now = ctx.clock.now()
    copied = from_copy(ctx.db, alice.token, now=now, settings=ctx.settings)
    assert copied is not None
    with ctx.db.read() as session:
        loaded = find_token(session, alice.token, now=now, settings=ctx.settings)
    assert loaded is not None
    assert copied[0].id == alice.id
    assert [looks(o) for o in copied] == [looks(o) for o in loaded]
    assert copied[0] is not from_copy(ctx.db, alice.token, now=now, settings=ctx.settings)[0]  # one per request
