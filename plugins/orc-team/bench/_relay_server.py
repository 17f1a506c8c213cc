"""The fan-out anchor for ``fanout_bench.py``: a minimal relay on the websockets library.  A
``subscribe`` message adds the connection to the audience (answered ``subscribed``); any other
message is decoded, wrapped as an ``event`` and encoded once, then sent to every subscriber with
``websockets.broadcast()``.  Prints "listening on http://127.0.0.1:PORT" on stderr; runs until
killed."""

from __future__ import annotations

import asyncio
import json
import sys

from websockets.asyncio.server import ServerConnection, broadcast, serve

audience: set[ServerConnection] = set()


async def relay(ws: ServerConnection) -> None:
    try:
        async for raw in ws:
            message = json.loads(raw)
            if message.get("type") == "subscribe":
                audience.add(ws)
                await ws.send(json.dumps({"type": "subscribed", "id": message.get("id")}))
            else:
                broadcast(audience, json.dumps({"type": "event", "data": message["data"]}))
    finally:
        audience.discard(ws)


async def main() -> None:
    async with serve(relay, "127.0.0.1", 0, compression=None, ping_interval=None,
                     max_queue=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"listening on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
