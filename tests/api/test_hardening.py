"""Input hardening and secrets: limits, hostile text stored and shown safely, rate limits, no secret in logs."""

from __future__ import annotations

import logging
import time

import httpx
import pytest
from support import Api, database_url, start_stack, wait_for, wipe
from support.channels import TEMPLATE, FakeWeChatServer, channel_settings, strict_state
from support.wsclient import WsClient

HOSTILE_NAMES = [
    "Robert'); DROP TABLE customers;--",
    "<img src=x onerror=alert(1)>",
    "🎉王小二👨‍👩‍👧‍👦",
    "Ｚｈāng Sān gnp.exe",  # (a right-to-left override in it is refused: test_edge_hardening)
    "名" * 100,
    "a%b_c\\d",
]


def test_hostile_text_is_stored_and_returned_verbatim(api, team):
    m = api.client(team.manager)
    for name in HOSTILE_NAMES:
        r = m.post("/api/customers", json={"name": name, "phone": "+86 138-0013-8000", "source": "<b>来源</b>"})
        assert r.status_code == 201, r.text
        lead = r.json()["data"]
        assert lead["name"] == name and lead["source"] == "<b>来源</b>" and lead["phone"] == "+8613800138000"
        assert m.get(f"/api/customers/{lead['id']}").json()["data"]["name"] == name
    # Keyword search treats SQL and LIKE wildcards as text.
    found = m.get("/api/customers", params={"keyword": "'); DROP"}).json()["data"]
    assert [c["name"] for c in found["items"]] == [HOSTILE_NAMES[0]]
    assert m.get("/api/customers", params={"keyword": "%b_"}).json()["data"]["total"] == 1
    assert m.get("/api/customers").json()["data"]["total"] == len(HOSTILE_NAMES)


def test_names_and_phones_are_validated(api, team):
    m = api.client(team.manager)
    for body, field in [
        ({"name": "", "phone": "13800138000"}, "name"),
        ({"name": "   ", "phone": "13800138000"}, "name"),
        ({"name": "名" * 101, "phone": "13800138000"}, "name"),
        ({"name": "张三", "phone": "call me"}, "phone"),
        ({"name": "张三", "phone": "1" * 40}, "phone"),
        ({"name": "张三", "phone": ""}, "phone"),
    ]:
        r = m.post("/api/customers", json=body)
        assert r.status_code == 422, (body, r.text)
        payload = r.json()
        assert payload["code"] == "validation_error" and payload["data"][0]["field"] == field
        assert "参数错误" in payload["message"]


def test_body_size_and_batch_limits(api, team):
    m = api.client(team.manager)
    big = b'{"name": "' + b"x" * 2_100_000 + b'", "phone": "13800138000"}'
    r = m.post("/api/customers", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"

    def chunks():
        yield b'{"name": "'
        for _ in range(30):
            yield b"y" * 100_000
        yield b'", "phone": "13800138000"}'

    r = m.post("/api/customers", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    r = m.post("/api/customers", json=[{"name": f"客户{i}", "phone": "13800138000"} for i in range(1001)])
    assert r.status_code == 422 and r.json()["code"] == "batch_too_large"
    assert m.get("/api/customers").json()["data"]["total"] == 0  # nothing half-written


def test_token_issuing_is_rate_limited(api, team, monkeypatch):
    monkeypatch.setattr(api.ctx.settings, "token_issues_per_minute", 3)
    # The limit counts per wall-clock minute: hold the limiter's clock so the test never straddles two
    # (it did under load: the fourth WeChat sign-in fell into a new minute and reached the 503 behind it).
    moment = time.time()
    monkeypatch.setattr(api.ctx.limiter, "_now", lambda: moment)
    admin = api.client(team.admin)
    for _ in range(3):
        assert admin.post(f"/api/users/{team.bob.id}/tokens").status_code == 201
    r = admin.post(f"/api/users/{team.bob.id}/tokens")
    assert r.status_code == 429 and r.json()["code"] == "too_many_requests"
    for _ in range(3):
        api.client(team.alice).post("/api/wechat/login", json={"code": "abc"})
    assert api.client(team.alice).post("/api/wechat/login", json={"code": "abc"}).status_code == 429


WECHAT_SECRET = "wxsecret-7f3a9c1e5b2d4f6a8c0e"
WECOM_SECRET = "wwsecret-0d9e8f7a6b5c4d3e2f1a"
WEBHOOK_SECRET = "whsecret-5e4d3c2b1a0f9e8d7c6b"


@pytest.mark.slow  # a whole day of traffic at DEBUG
@pytest.mark.parametrize("kind", ["sqlite"])
def test_no_secret_or_token_ever_reaches_the_logs_or_responses(kind, tmp_path, caplog):
    """A whole day in one go, with every logger at DEBUG; then search everything for every secret."""
    caplog.set_level(logging.DEBUG)
    state = strict_state(secret=WECHAT_SECRET, corpsecret=WECOM_SECRET)
    with FakeWeChatServer(state) as fake:
        gen = database_url(kind, str(tmp_path))
        url = next(gen)
        settings = channel_settings(
            fake.url,
            wechat_secret=WECHAT_SECRET,
            wecom_secret=WECOM_SECRET,
            webhook_url="http://127.0.0.1:9/closed",
            webhook_secret=WEBHOOK_SECRET,
            delivery_max_attempts=1,
            log_level="DEBUG",
        )
        ctx, server = start_stack(url, server_log_level="debug", **settings)
        for name in ("uvicorn", "uvicorn.access"):  # uvicorn's loggers do not propagate to the root
            logging.getLogger(name).addHandler(caplog.handler)
        wipe(ctx)
        api = Api(url=server.url, ctx=ctx)
        responses: list[str] = []
        try:
            admin = api.user("管理员", "admin", None)
            manager = api.user("王经理", "manager", "A")
            alice = api.user("李丽", "sales", "A", wechat_openid="o-alice-secret-test", wecom_userid="alice")
            fake.state.add_credits("o-alice-secret-test", TEMPLATE, 5)
            responses.append(api.client(alice).post("/api/wechat/subscriptions", json={TEMPLATE: "accept"}).text)
            new_token = api.client(admin).post(f"/api/users/{alice.id}/tokens").json()["data"]["token"]
            ws = WsClient(api.url, new_token, resume=0)
            lead = api.lead(manager)
            responses.append(
                api.client(manager).patch(f"/api/customers/{lead['id']}/assign", json={"assignedTo": alice.id}).text
            )
            wait_for(lambda: fake.state.get_messages("subscribe") or fake.state.get_messages("wecom"), 10)
            fake.state.revoke_tokens()  # forces a refresh: new access tokens flow through
            lead2 = api.lead(manager)
            api.client(manager).patch(f"/api/customers/{lead2['id']}/assign", json={"assignedTo": alice.id})
            ws.notifications(2, timeout=10)
            ws.close()
            time.sleep(1.0)
            for path in ("/api/deliveries", "/api/notifications", "/api/users", "/metrics", "/readyz", "/openapi.json"):
                responses.append(api.client(admin).get(path).text)
            httpx.get(api.url + "/api/me", headers={"Authorization": "Bearer lp_wrong"})
            access_tokens = [t for t in fake.state.list_tokens()] if hasattr(fake.state, "list_tokens") else []
        finally:
            api.close()
            server.stop()
            ctx.db.dispose()
            gen.close()
            for name in ("uvicorn", "uvicorn.access"):
                logging.getLogger(name).removeHandler(caplog.handler)

    # The test's own clients (httpx, websockets.client) log their requests; only the service's logs count.
    client_side = ("websockets.client", "httpx", "httpcore")
    server_records = [r for r in caplog.records if not r.name.startswith(client_side) or r.threadName != "MainThread"]
    logs = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in server_records)
    assert "subscribe/send?access_token=***" in logs  # the WeChat calls were logged, scrubbed
    assert "/ws?token=***" in logs  # and so was the WebSocket handshake
    secrets = [WECHAT_SECRET, WECOM_SECRET, WEBHOOK_SECRET, admin.token, manager.token, alice.token, new_token]
    for token in access_tokens:
        secrets.append(token["token"] if isinstance(token, dict) else str(token))
    assert len(secrets) > 7, "the fake issued access tokens"
    for secret in secrets:
        assert secret not in logs, f"secret leaked into logs: {secret[:6]}…"
        for body in responses:
            assert secret not in body or secret == new_token, f"secret leaked into a response: {secret[:6]}…"
