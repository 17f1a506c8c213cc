"""An aiohttp WebSocket server on a free loopback port that sends every text message back, with
the team server's WebSocket settings (no compression, bytes in): the transport floor for
``team_bench.py``.  Prints "listening on http://127.0.0.1:PORT" on stderr; runs until killed."""

from __future__ import annotations

import asyncio
import sys

from aiohttp import WSMsgType, web


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False, decode_text=False)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_frame(msg.data, WSMsgType.TEXT)
    return ws


async def main() -> None:
    app = web.Application()
    app.router.add_get("/api/ws", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(f"listening on http://127.0.0.1:{runner.addresses[0][1]}", file=sys.stderr, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
