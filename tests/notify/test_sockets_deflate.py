"""permessage-deflate under `leadpush serve`: negotiated as before, but with no compression context kept
between the server's messages and a small window, so an idle socket holds no zlib compressor (issue 17:
the compressor was ~38 KB of the ~88 KB a socket cost). What the client sees is unchanged otherwise."""

from __future__ import annotations

import json

from support.procs import LeadpushProcess
from websockets.sync.client import connect


def _extensions(node: LeadpushProcess, token: str, **env: str) -> tuple[str, list[dict]]:
    url = node.url.replace("http://", "ws://") + f"/ws?token={token}"
    with connect(url, open_timeout=10, compression="deflate") as ws:
        header = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        got = [json.loads(ws.recv(timeout=10))]
        ws.send(json.dumps({"type": "resume", "after": 0}))
        ws.send(json.dumps({"type": "ping"}))  # compressed by the client: the server still reads it
        while not {"unread", "pong"} <= {m.get("type") for m in got}:
            got.append(json.loads(ws.recv(timeout=10)))
    return header, got


def test_the_server_compresses_without_context_and_a_small_window(api, team, tmp_path):
    node = LeadpushProcess(
        {"LEADPUSH_DATABASE_URL": api.ctx.settings.database_url}, ("api",), tmp_path, "deflate"
    ).start()
    try:
        header, got = _extensions(node, team.alice.token)
    finally:
        node.stop()
    params = [p.strip() for p in header.split(";")]
    assert params[0] == "permessage-deflate"
    assert "server_no_context_takeover" in params
    assert "server_max_window_bits=10" in params
    assert "client_max_window_bits=10" in params
    assert got[0]["type"] == "hello"
    assert {"unread", "pong"} <= {m["type"] for m in got}


def test_the_compression_context_can_be_kept_by_setting(api, team, tmp_path):
    env = {
        "LEADPUSH_DATABASE_URL": api.ctx.settings.database_url,
        "LEADPUSH_WS_DEFLATE_CONTEXT_TAKEOVER": "true",
        "LEADPUSH_WS_DEFLATE_WINDOW_BITS": "12",
    }
    node = LeadpushProcess(env, ("api",), tmp_path, "deflate-kept").start()
    try:
        header, got = _extensions(node, team.alice.token)
    finally:
        node.stop()
    params = [p.strip() for p in header.split(";")]
    assert "server_no_context_takeover" not in params
    assert "server_max_window_bits=12" in params
    assert {"unread", "pong"} <= {m["type"] for m in got}


def test_a_browser_negotiates_the_smaller_deflate_and_reads_every_frame(api, team, tmp_path, browser):
    # Chromium: what the product's users run. It offers permessage-deflate with client_max_window_bits and
    # must accept server_no_context_takeover and the window sizes (RFC 7692), then inflate each message.
    node = LeadpushProcess(
        {"LEADPUSH_DATABASE_URL": api.ctx.settings.database_url}, ("api",), tmp_path, "deflate-br"
    ).start()
    page = browser.new_page()
    try:
        page.goto(node.url + "/healthz")
        result = page.evaluate(
            """([url]) => new Promise((resolve, reject) => {
                const ws = new WebSocket(url);
                const types = [];
                ws.onmessage = (e) => {
                    const m = JSON.parse(e.data);
                    types.push(m.type);
                    if (m.type === 'hello') { ws.send(JSON.stringify({type: 'resume', after: 0})); ws.send(JSON.stringify({type: 'ping'})); }
                    if (types.includes('unread') && types.includes('pong')) { resolve({ext: ws.extensions, types}); ws.close(); }
                };
                ws.onerror = () => reject(new Error('socket error'));
                setTimeout(() => reject(new Error('timeout: ' + types)), 20000);
            })""",
            [node.url.replace("http://", "ws://") + f"/ws?token={team.alice.token}"],
        )
    finally:
        page.close()
        node.stop()
    assert "permessage-deflate" in result["ext"]
    assert "server_no_context_takeover" in result["ext"]
    assert "server_max_window_bits=10" in result["ext"]
    assert result["types"][0] == "hello"
