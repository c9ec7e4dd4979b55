"""The floor for WebSocket push: a bare `websockets` server that relays and broadcasts, nothing else.

Each connection gets `{"type":"hello","conn":<n>}`. A client message `{"op":"send","to":<n>,...}` is
relayed to connection n (one push, like one notification); `{"op":"broadcast",...}` goes to every
connection at once (`websockets.broadcast`). `GET /healthz` answers 200. Same library and the same
default permessage-deflate negotiation a browser gets from leadpush's uvicorn.

    python -m benchmarks.floor_ws --port 8124
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response


async def main(port: int) -> None:
    connections: dict[int, ServerConnection] = {}
    ids = itertools.count(1)

    def health(connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        return None

    async def handler(ws: ServerConnection) -> None:
        conn_id = next(ids)
        connections[conn_id] = ws
        try:
            await ws.send(json.dumps({"type": "hello", "conn": conn_id}))
            async for raw in ws:
                message = json.loads(raw)
                if message.get("op") == "broadcast":
                    broadcast(connections.values(), raw)
                elif message.get("op") == "send":
                    target = connections.get(message.get("to"))
                    if target is not None:
                        await target.send(raw)
        finally:
            connections.pop(conn_id, None)

    async with serve(handler, "127.0.0.1", port, process_request=health, ping_interval=20, max_queue=64) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
