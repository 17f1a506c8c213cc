"""A child of ``team_bench.py``: CONNS WebSocket connections to the team server in one process.

Protocol on stdin/stdout, one line each: prints ``ready`` once connected (idle: the parent
measures the server's memory then), reads ``subscribe``, subscribes every connection to PROJECT,
prints ``subscribed``; then counts the events of each phase (payload ``{"phase", "t"}``, ``t`` the
publisher's ``time.time()``), prints ``done PHASE`` when every connection has all of them, and at
the end one JSON line: per phase, the publish-to-receive latencies and the last receive time.

    python team_subscriber.py URL TOKEN PROJECT CONNS EVENTS_PHASE_0 [EVENTS_PHASE_1 ...]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


async def _open(url: str, n: int) -> list[ClientConnection]:
    conns: list[ClientConnection] = []
    for start in range(0, n, 100):  # 100 handshakes at a time
        batch = [connect(f"{url}&client=sub-{start + i}", open_timeout=30, compression=None,
                         ping_interval=None, max_queue=None)
                 for i in range(min(100, n - start))]
        conns.extend(await asyncio.gather(*batch))
    return conns


async def _subscribe(ws: ClientConnection, project: str) -> None:
    await ws.send(json.dumps({"type": "subscribe", "id": "s", "data": {"project_id": project}}))
    while True:
        message = json.loads(await ws.recv())
        if message.get("id") == "s":
            assert message["type"] == "subscribed", message
            return


async def main(url: str, token: str, project: str, n: int, expected: list[int]) -> None:
    loop = asyncio.get_running_loop()
    conns = await _open(f"{url}/api/ws?token={token}", n)
    print("ready", flush=True)
    assert (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "subscribe"
    await asyncio.gather(*(_subscribe(ws, project) for ws in conns))
    print("subscribed", flush=True)

    latencies: list[list[float]] = [[] for _ in expected]
    last: list[float] = [0.0 for _ in expected]
    remaining = [count * n for count in expected]
    finished = asyncio.Event()

    async def read(ws: ClientConnection) -> None:
        async for raw in ws:
            now = time.time()
            message: dict[str, Any] = json.loads(raw)
            if message.get("type") != "event":
                continue
            payload = message["data"]["payload"]
            phase = payload["phase"]
            latencies[phase].append(now - payload["t"])
            last[phase] = max(last[phase], now)
            remaining[phase] -= 1
            if remaining[phase] == 0:
                print(f"done {phase}", flush=True)
                if not any(remaining):
                    finished.set()

    readers = [asyncio.create_task(read(ws)) for ws in conns]
    await finished.wait()
    print(json.dumps({"latencies": latencies, "last": last}), flush=True)
    for task in readers:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)


if __name__ == "__main__":
    url, token, project, n, *counts = sys.argv[1:]
    asyncio.run(main(url, token, project, int(n), [int(c) for c in counts]))
