"""People sign in as people: login name and password give a session; lockouts stop guessing without locking
an office out; sessions expire, end on sign-out and on password changes, and take their sockets with them.

Hashing a password costs tens of milliseconds (argon2), so only the people whose password matters get one.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import update
from support import Api, Person, ok, refused
from support.wsclient import WsClient

from leadpush.users import passwords
from leadpush.users.models import User

SIGNED_OUT = 4401
PASSWORD = "spring-2026"


def with_password(api: Api, person: Person, login_name: str, password: str = PASSWORD) -> Person:
    with api.ctx.db.write() as session:
        session.execute(
            update(User)
            .where(User.id == person.id)
            .values(
                login_name=login_name,
                password_hash=passwords.hash_password(password),
                password_changed_at=api.ctx.clock.now(),
            )
        )
    return person


def login(api: Api, login_name: str, password: str = PASSWORD, address: str | None = None) -> httpx.Response:
    """POST /api/auth/login, from `address` (through the trusted proxy on loopback) when given."""
    headers = {"X-Forwarded-For": address} if address else {}
    return api.client().post("/api/auth/login", json={"loginName": login_name, "password": password}, headers=headers)


def session_of(api: Api, login_name: str, password: str = PASSWORD, address: str | None = None) -> str:
    return ok(login(api, login_name, password, address))["token"]


def test_a_person_signs_in_with_login_name_and_password(api, team):
    with_password(api, team.alice, "13800000001")
    r = login(api, " 13800000001 ", PASSWORD)
    data = ok(r)
    assert data["token"].startswith("lps_") and len(data["token"]) > 30
    assert data["user"] == {**data["user"], "id": team.alice.id, "loginName": "13800000001", "hasPassword": True}
    assert "passwordHash" not in data["user"]
    expires = datetime.fromisoformat(data["expiresAt"])
    assert expires == api.ctx.clock.now() + timedelta(hours=168)
    me = ok(api.client(data["token"]).get("/api/me"))
    assert me["id"] == team.alice.id and me["lockedUntil"] is None
    # The session works on the WebSocket too.
    ws = WsClient(api.url, data["token"])
    assert ws.hello["data"]["userId"] == team.alice.id
    ws.close()


def test_a_wrong_password_and_an_unknown_login_name_answer_alike(api, team):
    with_password(api, team.alice, "alice")
    wrong = refused(login(api, "alice", "not-her-password"), 401, "invalid_credentials")
    unknown = refused(login(api, "nobody", "not-her-password"), 401, "invalid_credentials")
    assert wrong == unknown
    assert wrong["message"] == "登录名或密码错误"
    # Someone without a password (API tokens only) cannot sign in with any password, not even an empty one.
    with api.ctx.db.write() as session:
        session.execute(update(User).where(User.id == team.bob.id).values(login_name="bob"))
    assert refused(login(api, "bob", ""), 401, "invalid_credentials") == wrong
    # Nonsense bodies are 422s, not 500s.
    c = api.client()
    refused(c.post("/api/auth/login", json={"loginName": "alice"}), 422, "validation_error")
    refused(c.post("/api/auth/login", json={"loginName": "a" * 500, "password": "x"}), 422, "validation_error")


def test_a_deactivated_person_cannot_sign_in(api, team):
    with_password(api, team.alice, "alice")
    ok(api.client(team.admin).patch(f"/api/users/{team.alice.id}", json={"active": False}))
    refused(login(api, "alice"), 403, "user_inactive")
    # A wrong password still says only "wrong": being deactivated is told to whoever knows the password.
    refused(login(api, "alice", "guess-guess"), 401, "invalid_credentials")


def test_five_failures_lock_the_account_on_that_address_only(api, team):
    with_password(api, team.alice, "alice")
    with_password(api, team.bob, "bob")
    office = "203.0.113.7"
    for _ in range(4):
        refused(login(api, "alice", "wrong-password", office), 401, "invalid_credentials")
    r = login(api, "alice", "wrong-password", office)
    body = refused(r, 429, "too_many_attempts")
    assert 890 <= int(r.headers["Retry-After"]) <= 900
    assert "15 分钟" in body["message"]
    # Now even the right password waits on that address ...
    r = login(api, "alice", PASSWORD, office)
    refused(r, 429, "too_many_attempts")
    assert 0 < int(r.headers["Retry-After"]) <= 900
    # ... but not from her phone, and her colleague in the same office signs in as usual.
    ok(login(api, "alice", PASSWORD, "198.51.100.20"))
    ok(login(api, "bob", PASSWORD, office))
    # The same guessing against an unknown login name looks the same.
    for _ in range(4):
        refused(login(api, "ghost", "wrong-password", office), 401, "invalid_credentials")
    refused(login(api, "ghost", "wrong-password", office), 429, "too_many_attempts")


def test_a_successful_sign_in_starts_the_count_afresh(api, team):
    with_password(api, team.alice, "alice")
    for _ in range(4):
        refused(login(api, "alice", "wrong-password", "203.0.113.7"), 401, "invalid_credentials")
    ok(login(api, "alice", PASSWORD, "203.0.113.7"))
    for _ in range(4):
        refused(login(api, "alice", "wrong-password", "203.0.113.7"), 401, "invalid_credentials")
    ok(login(api, "alice", PASSWORD, "203.0.113.7"))


def failures_so_far(api: Api, person: Person, count: int) -> None:
    """As if `count` failed sign-ins from all over had just happened (hashing twenty of them would be slow)."""
    with api.ctx.db.write() as session:
        session.execute(
            update(User).where(User.id == person.id).values(failed_logins=count, last_failed_at=api.ctx.clock.now())
        )


def test_twenty_failures_from_anywhere_lock_the_account_until_an_admin_resets_it(api, team):
    with_password(api, team.alice, "alice")
    failures_so_far(api, team.alice, 19)
    r = login(api, "alice", "wrong-password", "192.0.2.50")
    body = refused(r, 429, "account_locked")
    assert int(r.headers["Retry-After"]) == 900 and "15 分钟" in body["message"]
    # Locked everywhere, for the right password too; admins see until when.
    r = login(api, "alice", PASSWORD, "198.51.100.20")
    refused(r, 429, "account_locked")
    assert 0 < int(r.headers["Retry-After"]) <= 900
    listed = {u["id"]: u for u in ok(api.client(team.admin).get("/api/users"))}
    assert listed[team.alice.id]["lockedUntil"] is not None
    # Other people are not affected.
    with_password(api, team.bob, "bob")
    ok(login(api, "bob", PASSWORD, "192.0.2.50"))
    # An admin resets her password: the lock is gone, the new password works at once.
    reset = ok(api.client(team.admin).post(f"/api/users/{team.alice.id}/password", json={"newPassword": "summer-2026"}))
    assert reset["lockedUntil"] is None and reset["hasPassword"] is True
    ok(login(api, "alice", "summer-2026", "198.51.100.20"))
    refused(login(api, "alice", PASSWORD, "198.51.100.20"), 401, "invalid_credentials")


def test_an_account_lock_runs_out_after_fifteen_minutes(api, team):
    with_password(api, team.alice, "alice")
    failures_so_far(api, team.alice, 19)
    refused(login(api, "alice", "wrong-password", "192.0.2.50"), 429, "account_locked")
    api.ctx.clock.advance(minutes=14)
    refused(login(api, "alice", PASSWORD, "198.51.100.20"), 429, "account_locked")
    api.ctx.clock.advance(minutes=2)
    ok(login(api, "alice", PASSWORD, "198.51.100.20"))
    assert ok(api.client(team.admin).get("/api/users"))[2]["lockedUntil"] is None


def test_failures_far_apart_do_not_add_up_to_a_lock(api, team):
    with_password(api, team.alice, "alice")
    failures_so_far(api, team.alice, 19)
    api.ctx.clock.advance(minutes=16)  # the run of failures is over: this one starts a new run
    refused(login(api, "alice", "wrong-password", "192.0.2.50"), 401, "invalid_credentials")
    ok(login(api, "alice", PASSWORD, "198.51.100.20"))


def test_a_session_ends_after_twelve_idle_hours_and_after_a_week_at_most(api, team):
    with_password(api, team.alice, "alice")
    token = session_of(api, "alice")
    me = api.client(token)
    clock = api.ctx.clock
    # Used every eleven hours, it lives on ...
    for _ in range(15):
        clock.advance(hours=11)
        ok(me.get("/api/me"))
    # ... until a week after signing in (15 x 11 h = 165 h).
    ws = WsClient(api.url, token)
    clock.advance(hours=4)
    refused(me.get("/api/me"), 401, "invalid_token")
    api.ctx.signals.auth_changed({team.alice.id})  # as the periodic check would
    assert ws.wait_closed(timeout=30) == SIGNED_OUT

    # A fresh session left alone for more than twelve hours is over too, socket included.
    token = session_of(api, "alice")
    ok(api.client(token).get("/api/me"))
    ws = WsClient(api.url, token)
    clock.advance(hours=11, minutes=59)
    api.ctx.signals.auth_changed({team.alice.id})  # as the periodic check would
    ws.send({"type": "ping"})
    ws.next_of("pong", timeout=10)
    clock.advance(minutes=2)
    api.ctx.signals.auth_changed({team.alice.id})
    assert ws.wait_closed(timeout=30) == SIGNED_OUT
    refused(api.client(token).get("/api/me"), 401, "invalid_token")
    # API tokens do not expire.
    ok(api.client(team.alice).get("/api/me"))


def test_signing_out_ends_that_session_and_its_socket_only(api, team):
    with_password(api, team.alice, "alice")
    laptop, phone = session_of(api, "alice"), session_of(api, "alice")
    laptop_ws, phone_ws = WsClient(api.url, laptop, resume=0), WsClient(api.url, phone, resume=0)
    for ws in (laptop_ws, phone_ws):
        ws.next_of("unread")
    r = api.client(laptop).post("/api/auth/logout")
    assert ok(r) is None and r.json()["message"] == "已退出登录"
    assert laptop_ws.wait_closed(timeout=30) == SIGNED_OUT
    refused(api.client(laptop).get("/api/me"), 401, "invalid_token")
    phone_ws.send({"type": "ping"})
    phone_ws.next_of("pong", timeout=10)
    assert not phone_ws.closed
    ok(api.client(phone).get("/api/me"))
    # An API token is not a session: revoking one is a separate, deliberate act.
    refused(api.client(team.alice).post("/api/auth/logout"), 400, "not_a_session")
    ok(api.client(team.alice).get("/api/me"))
    refused(api.client().post("/api/auth/logout"), 401, "unauthorized")
    phone_ws.close()


def test_changing_ones_password_ends_the_other_sessions(api, team):
    with_password(api, team.alice, "alice")
    here, there = session_of(api, "alice"), session_of(api, "alice")
    there_ws = WsClient(api.url, there, resume=0)
    there_ws.next_of("unread")
    c = api.client(here)
    body = {"currentPassword": "not-it", "newPassword": "autumn-2026"}
    refused(c.post("/api/me/password", json=body), 403, "wrong_password")
    for weak, words in (("short1", "8 个字符"), ("1234567890", "全是数字"), ("x" * 129, "128 个字符")):
        r = c.post("/api/me/password", json={"currentPassword": PASSWORD, "newPassword": weak})
        assert words in refused(r, 422, "weak_password")["message"]
    with api.ctx.db.write() as session:
        session.execute(update(User).where(User.id == team.alice.id).values(login_name="alice-2026"))
    r = c.post("/api/me/password", json={"currentPassword": PASSWORD, "newPassword": "Alice-2026"})
    assert "登录名" in refused(r, 422, "weak_password")["message"]
    changed = ok(c.post("/api/me/password", json={"currentPassword": PASSWORD, "newPassword": "autumn-2026"}))
    assert changed["hasPassword"] is True
    assert there_ws.wait_closed(timeout=30) == SIGNED_OUT
    refused(api.client(there).get("/api/me"), 401, "invalid_token")
    ok(c.get("/api/me"))  # this session stays
    ok(api.client(team.alice).get("/api/me"))  # and so do API tokens
    refused(login(api, "alice-2026", PASSWORD), 401, "invalid_credentials")
    ok(login(api, "alice-2026", "autumn-2026"))


def test_someone_without_a_password_sets_one_and_an_admin_sets_login_names(api, team):
    admin = api.client(team.admin)
    alice = api.client(team.alice)
    refused(alice.post("/api/me/password", json={"newPassword": "first-pass-1"}), 422, "login_name_required")
    named = ok(admin.patch(f"/api/users/{team.alice.id}", json={"loginName": " 13800000001 "}))
    assert named["loginName"] == "13800000001" and named["hasPassword"] is False
    refused(admin.patch(f"/api/users/{team.bob.id}", json={"loginName": "13800000001"}), 409, "login_name_taken")
    refused(admin.patch(f"/api/users/{team.bob.id}", json={"loginName": "a b"}), 422, "invalid_login_name")
    ok(alice.post("/api/me/password", json={"newPassword": "first-pass-1"}))
    ok(login(api, "13800000001", "first-pass-1"))
    # Managers and salespeople set nobody else's password.
    for who in (team.manager, team.alice):
        r = api.client(who).post(f"/api/users/{team.bob.id}/password", json={"newPassword": "whatever-1"})
        refused(r, 403, "forbidden")
    refused(admin.post("/api/users/98765/password", json={"newPassword": "whatever-1"}), 404, "user_not_found")


def test_an_admin_creates_a_person_with_a_password(api, team):
    admin = api.client(team.admin)
    body = {"name": "周杰", "role": "sales", "team": "A", "loginName": "E1024", "password": "12345678"}
    refused(admin.post("/api/users", json=body), 422, "weak_password")
    refused(
        admin.post("/api/users", json={**body, "loginName": None, "password": "e1024-pass"}), 422, "login_name_required"
    )
    created = ok(admin.post("/api/users", json={**body, "password": "e1024-pass"}), 201)
    assert created["user"]["loginName"] == "E1024" and created["user"]["hasPassword"] is True
    refused(admin.post("/api/users", json={**body, "name": "冒名", "password": None}), 409, "login_name_taken")
    assert ok(login(api, "E1024", "e1024-pass"))["user"]["id"] == created["user"]["id"]


def test_people_manage_their_named_api_tokens(api, team):
    alice, admin, manager = api.client(team.alice), api.client(team.admin), api.client(team.manager)
    made = ok(alice.post("/api/tokens", json={"name": "ERP 对接"}), 201)
    assert made["token"].startswith("lp_") and made["name"] == "ERP 对接" and made["userId"] == team.alice.id
    assert made["prefix"] == made["token"][:8] and made["lastUsedAt"] is None and made["revokedAt"] is None
    listed = ok(alice.get("/api/tokens"))
    assert [t["name"] for t in listed] == ["ERP 对接", None]  # newest first; the one she was created with
    assert all("token" not in t for t in listed)
    # Using it records when (at most once a minute).
    ok(api.client(made["token"]).get("/api/me"))
    first_use = ok(alice.get("/api/tokens"))[0]["lastUsedAt"]
    assert first_use is not None
    api.ctx.clock.advance(seconds=30)
    ok(api.client(made["token"]).get("/api/me"))
    assert ok(alice.get("/api/tokens"))[0]["lastUsedAt"] == first_use
    api.ctx.clock.advance(seconds=31)
    ok(api.client(made["token"]).get("/api/me"))
    assert ok(alice.get("/api/tokens"))[0]["lastUsedAt"] > first_use
    # Sessions are not API tokens and are not listed.
    with_password(api, team.alice, "alice")
    session_of(api, "alice")
    assert len(ok(alice.get("/api/tokens"))) == 2

    # Whose: one's own; admins anyone's; managers only their own.
    refused(manager.get("/api/tokens", params={"userId": team.alice.id}), 403, "forbidden")
    refused(manager.post("/api/tokens", json={"name": "x", "userId": team.alice.id}), 403, "forbidden")
    refused(manager.delete(f"/api/tokens/{made['id']}"), 404, "token_not_found")
    assert len(ok(admin.get("/api/tokens", params={"userId": team.alice.id}))) == 2
    for_bob = ok(admin.post("/api/tokens", json={"name": "代办", "userId": team.bob.id}), 201)
    assert for_bob["userId"] == team.bob.id
    ok(api.client(for_bob["token"]).get("/api/me"))
    refused(admin.get("/api/tokens", params={"userId": 98765}), 404, "user_not_found")
    refused(alice.post("/api/tokens", json={"name": " "}), 422, "invalid_name")
    refused(alice.post("/api/tokens", json={}), 422, "validation_error")

    # Revoking one signs out what uses it, and nothing else.
    ws = WsClient(api.url, made["token"], resume=0)
    ws.next_of("unread")
    revoked = ok(alice.delete(f"/api/tokens/{made['id']}"))
    assert revoked["revokedAt"] is not None
    assert ws.wait_closed(timeout=30) == SIGNED_OUT
    refused(api.client(made["token"]).get("/api/me"), 401, "invalid_token")
    ok(alice.get("/api/me"))
    refused(alice.delete(f"/api/tokens/{for_bob['id']}"), 404, "token_not_found")
    ok(admin.delete(f"/api/tokens/{for_bob['id']}"))
    refused(api.client(for_bob["token"]).get("/api/me"), 401, "invalid_token")
    refused(alice.delete("/api/tokens/98765"), 404, "token_not_found")


def test_the_console_exchanges_an_api_token_for_a_session(api, team):
    r = httpx.post(api.url + "/console/api/session", json={"token": team.manager.token})
    data = ok(r)
    assert data["token"].startswith("lps_") and data["user"]["id"] == team.manager.id
    ok(api.client(data["token"]).get("/api/me"))
    # A session cannot be exchanged for a longer one.
    r = httpx.post(api.url + "/console/api/session", json={"token": data["token"]})
    refused(r, 422, "not_an_api_token")
    refused(httpx.post(api.url + "/console/api/session", json={"token": "lp_nope"}), 401, "invalid_token")
    # Signing out ends the session; the API token it came from stays.
    ok(api.client(data["token"]).post("/api/auth/logout"))
    refused(api.client(data["token"]).get("/api/me"), 401, "invalid_token")
    ok(api.client(team.manager).get("/api/me"))


@pytest.mark.parametrize("how", ["deactivate", "revoke"])
def test_deactivation_and_revocation_end_sessions(api, team, how):
    with_password(api, team.alice, "alice")
    token = session_of(api, "alice")
    ws = WsClient(api.url, token, resume=0)
    ws.next_of("unread")
    admin = api.client(team.admin)
    if how == "deactivate":
        ok(admin.patch(f"/api/users/{team.alice.id}", json={"active": False}))
    else:
        ok(admin.post(f"/api/users/{team.alice.id}/tokens/revoke"))
    assert ws.wait_closed(timeout=30) == SIGNED_OUT
    refused(api.client(token).get("/api/me"), 401, "invalid_token")
