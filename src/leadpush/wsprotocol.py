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
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.server import ServerProtocol

# zlib's memLevel for the compressor (uvicorn's and websockets' default): it is only alive while one
# message is compressed unless the context is kept.
MEM_LEVEL = 5


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

        async def send(self, message: Any) -> None:
            await super().send(message)
            if message["type"] == "websocket.accept" and self.handshake_complete:
                # The handshake's request and response (their header objects, ~3 KB) are not read again;
                # the application keeps what it needs in its ASGI scope.
                self.request = self.response = None  # type: ignore[assignment]

    return LeadpushWebSocketProtocol
