"""A WebSocket server that answers every message with 3 MiB of text, more than the client's
2 MiB limit: for ``test_client.py``.  Prints "listening on http://127.0.0.1:PORT" on stderr."""

from __future__ import annotations

import asyncio
import sys

from aiohttp import WSMsgType, web

BIG = "x" * (3 * 1024 * 1024)


async def answer(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(BIG)
    return ws


async def main() -> None:
    app = web.Application()
    app.router.add_get("/api/ws", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(f"listening on http://127.0.0.1:{runner.addresses[0][1]}", file=sys.stderr, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
