"""uvicorn's WebSocket protocol (the sans-I/O `websockets` one, uvicorn's default) with leadpush's
permessage-deflate settings.

Where an idle socket's memory went (issue 17, tracemalloc in the serving process, 1,000 sockets): ~49 KB
of ~93 KB was zlib — the compressor uvicorn keeps per socket (window 2×4 KB, hash chains, pending buffer
at 12 window bits / memLevel 5: ~38 KB) and the decompressor (~7 KB state + a 4 KB window). Notifications
are small JSON messages a socket gets a few of an hour, so by default the server keeps no compression
context between its messages (`server_no_context_takeover`: a compressor lives only while one message is
compressed) and both directions use a 1 KB window (`server_max_window_bits` / `client_max_window_bits`
of 10). Every browser accepts both answers (RFC 7692 §7.1.1.1, §7.1.2.2); what the client receives is the
same text. LEADPUSH_WS_DEFLATE_CONTEXT_TAKEOVER=true and LEADPUSH_WS_DEFLATE_WINDOW_BITS=12 restore
uvicorn's own negotiation. The handshake's request and response objects are let go once the socket is
accepted (~3 KB).

Sending (issue 17, the cross-process burst): a text message shorter than COMPRESS_MIN_BYTES goes out as
an uncompressed frame (RSV1 clear; RFC 7692 §6 lets a sender leave any message uncompressed, and every
client reads both): a notification of ~300 bytes shrank by ~20% for ~30 µs of zlib set-up and compression,
a heartbeat or an unread count not at all. The text is the same. And the application can write a frame
at once from the event loop, without a send coroutine, through the `leadpush.send_now` scope extension
(`SendNow`): the WebSocket endpoint hands a pushed notification or a heartbeat to an idle socket that way
instead of waking the socket's writer task for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.exceptions import InvalidState
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.server import ServerProtocol

# zlib's memLevel for the compressor (uvicorn's and websockets' default): it is only alive while one
# message is compressed unless the context is kept.
MEM_LEVEL = 5
# Text messages shorter than this (UTF-8 bytes) are sent uncompressed: heartbeats, pongs, unread counts and
# most notifications (~300 bytes). Longer ones (a notification with a long body, a catch-up page's items
# are sent one by one) are compressed as negotiated.
COMPRESS_MIN_BYTES = 512
# The ASGI scope's `extensions` key under which a socket offers `SendNow`.
SEND_NOW = "leadpush.send_now"
# Write a text frame now, on the event loop: True if written; False if it cannot be written at once (the
# transport is paused, the socket is closing or closed): then send it the ordinary way (which waits).
SendNow = Callable[[str], bool]


def protocol_class(context_takeover: bool, window_bits: int) -> type[asyncio.Protocol]:
    """The uvicorn `ws=` protocol class negotiating permessage-deflate with these settings."""

    class LeadpushWebSocketProtocol(WebSocketsSansIOProtocol):
        def __init__(
            self,
            config: Config,
            server_state: ServerState,
            app_state: dict[str, Any],
            _loop: asyncio.AbstractEventLoop | None = None,
        ) -> None:
            super().__init__(config, server_state, app_state, _loop)
            if config.ws_per_message_deflate:
                # uvicorn hard-codes its factory; this connection has not negotiated anything yet.
                self.conn = ServerProtocol(
                    extensions=[
                        ServerPerMessageDeflateFactory(
                            server_no_context_takeover=not context_takeover,
                            server_max_window_bits=window_bits,
                            client_max_window_bits=window_bits,
                            compress_settings={"memLevel": MEM_LEVEL},
                        )
                    ],
                    max_size=config.ws_max_size,
                    logger=self.conn.logger,
                )

        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            if self.handshake_initiated and not self.handshake_complete:  # accepted by the handshake so far
                extensions: dict[str, Any] = self.scope["extensions"]
                extensions[SEND_NOW] = self.send_now

        def send_now(self, text: str) -> bool:
            if (
                self.disconnected
                or self.close_sent
                or not self.handshake_complete
                or self.initial_response is not None
                or not self.writable.is_set()
            ):
                return False
            try:
                data = text.encode()
            except UnicodeEncodeError:  # the ordinary send fails on it too (and the socket is closed)
                return False
            try:
                self._send_text(data)
            except InvalidState:
                return False
            return True

        def _send_text(self, data: bytes) -> None:
            conn = self.conn
            if len(data) < COMPRESS_MIN_BYTES and conn.extensions:
                extensions, conn.extensions = conn.extensions, []
                try:
                    conn.send_text(data)
                finally:
                    conn.extensions = extensions
            else:
                conn.send_text(data)
            self.transport.write(b"".join(conn.data_to_send()))

        async def send(self, message: Any) -> None:
            if (
                message["type"] == "websocket.send"
                and message.get("text") is not None
                and message.get("bytes") is None
                and self.handshake_complete
                and not self.close_sent
                and self.initial_response is None
            ):
                # uvicorn's own "websocket.send" branch, with the small-message rule of `_send_text`.
                await self.writable.wait()
                if self.disconnected:
                    raise ClientDisconnected()
                if self.close_sent:  # closed while this send waited: as uvicorn, refuse it
                    raise RuntimeError("Unexpected ASGI message 'websocket.send', after sending 'websocket.close'.")
                try:
                    self._send_text(message["text"].encode())
                except InvalidState:
                    raise ClientDisconnected() from None
                return
            await super().send(message)
            if message["type"] == "websocket.accept" and self.handshake_complete:
                # The handshake's request and response (their header objects, ~3 KB) are not read again;
                # the application keeps what it needs in its ASGI scope.
                self.request = self.response = None  # type: ignore[assignment]

    return LeadpushWebSocketProtocol
