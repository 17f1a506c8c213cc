"""Replay: how long a subscriber takes to receive 10,000 missed events after ``subscribe since``.

``python plugins/orc-team/bench/replay.py [EVENTS] [--rounds N]`` (about 10 s).  A team server
(a child process on loopback, rate limit out of the way) is filled with EVENTS ``task.transcript``
events of one project through ``events`` batches of 200 (that rate is printed too: it is what an
outbox drains at); then, each round, a new connection subscribes with ``since: 0`` and the time
from sending ``subscribe`` to the last event arriving is taken.  The anchor: the same number of
messages of the same size sent to an aiohttp echo server and read back, the transport alone,
from the same websockets sync client.  Median of the rounds; the figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _procs import SECRET, EchoServer, TeamServer
from websockets.sync.client import ClientConnection, connect

from orc_team.protocol import MAX_BATCH_EVENTS
from orc_team.tokens import mint_token

PROJECT = "bench"
LINE = "compiling src/module_%05d.c ... ok" + " " * 40


def _open(url: str, user: str) -> ClientConnection:
    token = mint_token(SECRET, user, expires_in=3600)
    return connect(f"{url}/api/ws", additional_headers={"Authorization": f"Bearer {token}"},
                   max_size=None, compression=None)


def _reply(ws: ClientConnection, req_id: str) -> dict[str, object]:
    while True:
        message = json.loads(ws.recv(timeout=30))
        if message.get("id") == req_id:
            reply: dict[str, object] = message
            return reply


def fill(url: str, n: int) -> float:
    """Publish ``n`` events in batches; events/s."""
    with _open(url, "publisher") as ws:
        started = time.perf_counter()
        for start in range(0, n, MAX_BATCH_EVENTS):
            events = [{"event_id": str(uuid.uuid4()), "event_type": "task.transcript",
                       "task_id": f"TASK-{i // 1000}", "project_id": PROJECT,
                       "payload": {"role": "stdout", "content": LINE % i}}
                      for i in range(start, min(n, start + MAX_BATCH_EVENTS))]
            ws.send(json.dumps({"type": "events", "id": f"b{start}",
                                "data": {"events": events}}))
            reply = _reply(ws, f"b{start}")
            assert reply["type"] == "acks", reply
        return n / (time.perf_counter() - started)


def replay_once(url: str, n: int) -> tuple[float, int]:
    """Seconds from ``subscribe since 0`` to the n-th event, and the size of one event."""
    with _open(url, "subscriber") as ws:
        started = time.perf_counter()
        ws.send(json.dumps({"type": "subscribe", "id": "s",
                            "data": {"project_id": PROJECT, "since": 0}}))
        got, last, size = 0, 0, 0
        while got < n:
            raw = ws.recv(timeout=30, decode=False)
            if not raw.startswith(b'{"type":"event"'):
                continue
            offset = json.loads(raw)["data"]["offset"]
            assert offset == last + 1, (offset, last)
            last, got, size = offset, got + 1, len(raw)
        return time.perf_counter() - started, size


def echo_once(url: str, n: int, size: int) -> float:
    """Seconds to send ``n`` messages of ``size`` bytes to the echo server and read them back."""
    message = json.dumps({"type": "event", "data": {"pad": "x" * max(0, size - 40)}})
    with _open(url, "echo") as ws:
        started = time.perf_counter()
        for _ in range(n):
            ws.send(message)
        for _ in range(n):
            ws.recv(timeout=30, decode=False)
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("events", nargs="?", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n = args.events
    with tempfile.TemporaryDirectory(prefix="orc-replay-bench-") as tmp:
        server = TeamServer(Path(tmp), "--events-kept", str(max(n, 10_000)))
        echo = EchoServer()
        try:
            rate = fill(server.url, n)
            runs = [replay_once(server.url, n) for _ in range(args.rounds)]
            size = runs[0][1]
            anchors = [echo_once(echo.url, n, size) for _ in range(args.rounds)]
        finally:
            server.stop()
            echo.stop()
    replay = statistics.median(t for t, _ in runs)
    anchor = statistics.median(anchors)
    print(f"publish {n:,} events in batches of {MAX_BATCH_EVENTS}: {rate:,.0f} events/s")
    print(f"replay {n:,} missed events ({size} bytes each) after subscribe since 0: "
          f"{replay * 1000:.0f} ms median of {args.rounds} "
          f"(min {min(t for t, _ in runs) * 1000:.0f} ms), {n / replay:,.0f} events/s")
    print(f"anchor: {n:,} messages of that size echoed by aiohttp (same client): "
          f"{anchor * 1000:.0f} ms median; replay / anchor = {replay / anchor:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
