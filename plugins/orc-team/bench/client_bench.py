"""The client's share of a request round trip: print figures, assert nothing.  Servers are child
processes on loopback, started here on free ports and stopped at the end.

1. Against an aiohttp echo server (``_echo_server.py``), which sends every message back at once
   (no store, no routing): what is left is the client and the transport.  ``WSClient.request``
   against two references: the websockets library's sync client (its own background thread
   reads the socket and queues messages for the caller: the floor of a client built on it, as
   ``WSClient`` was), and a bare loop over the library's Sans-I/O protocol on a blocking socket
   (no locks, no routing, no timeouts: the floor of any Python client on that library).
2. Against a team server: ``WSClient.request("ping")`` (answered without the store), and the
   lock+unlock cycle through ``WebSocketLocker`` (two round trips, each a store transaction).

    python bench/client_bench.py [ROUNDS]      (1,000 round trips per row per round; ~10 s)
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _procs import SECRET, EchoServer, TeamServer, percentile, settings

from orc_team.client.locker import WebSocketLocker
from orc_team.client.wsclient import WSClient
from orc_team.tokens import mint_token

us = 1e6
PER_ROUND = 1000


def row(*cells: object) -> None:
    print("  " + "".join(f"{c!s:>12}" if i else f"{c!s:<44}" for i, c in enumerate(cells)))


def summary(name: str, samples: list[float]) -> None:
    mean = sum(samples) / len(samples)
    row(name, f"{mean * us:.0f}", f"{percentile(samples, 50) * us:.0f}",
        f"{percentile(samples, 99) * us:.0f}")


def timed(n: int, once: Callable[[int], object]) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        once(i)
        out.append(time.perf_counter() - t)
    return out


def sync_client(url: str) -> tuple[Any, Callable[[int], object]]:
    """The websockets sync client, and one ping round trip on it."""
    from websockets.sync.client import connect

    ws = connect(f"{url}/api/ws?client=bench:9:1", compression=None, proxy=None, legacy=True,
                 additional_headers={"Authorization": "Bearer "
                                     + mint_token(SECRET, "bench9", expires_in=3600)})

    def once(i: int) -> None:
        ws.send(json.dumps({"type": "ping", "id": f"s{i}"}))
        while json.loads(ws.recv()).get("id") != f"s{i}":
            pass

    return ws, once


def sans_io(url: str) -> tuple[socket.socket, Callable[[int], object]]:
    """The bare Sans-I/O loop: send, then read the socket on this thread until the reply."""
    from websockets.client import ClientProtocol
    from websockets.frames import Frame
    from websockets.protocol import State
    from websockets.uri import parse_uri

    uri = parse_uri(f"{url}/api/ws?client=bench:8:1")
    sock = socket.create_connection((uri.host, uri.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    protocol = ClientProtocol(uri)
    request = protocol.connect()
    request.headers["Authorization"] = "Bearer " + mint_token(SECRET, "bench8", expires_in=3600)
    protocol.send_request(request)
    while protocol.state is State.CONNECTING:
        for data in protocol.data_to_send():
            sock.sendall(data)
        protocol.receive_data(sock.recv(65536))
    protocol.events_received()

    def once(i: int) -> None:
        protocol.send_text(json.dumps({"type": "ping", "id": f"b{i}"}).encode())
        for data in protocol.data_to_send():
            sock.sendall(data)
        while True:
            protocol.receive_data(sock.recv(65536))
            for event in protocol.events_received():
                if isinstance(event, Frame) and json.loads(bytes(event.data)).get("id") == f"b{i}":
                    return

    return sock, once


def compare(rows: dict[str, Callable[[int], object]], rounds: int) -> None:
    """Interleaved rounds, after a warm-up: the machine's noise hits every row alike."""
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for once in rows.values():
        timed(200, once)
    for _ in range(rounds):
        for name, once in rows.items():
            samples[name] += timed(PER_ROUND, once)
    row("", "mean us", "p50 us", "p99 us")
    for name, values in samples.items():
        summary(name, values)


def part_echo(rounds: int) -> None:
    print("\n1. one round trip to an aiohttp echo server (client and transport only)")
    echo = EchoServer()
    try:
        client = WSClient(settings(echo.url, "bench1"), "bench:1:1")
        raw, raw_once = sync_client(echo.url)
        bare, bare_once = sans_io(echo.url)
        compare({"websockets sync client (reader thread)": raw_once,
                 "bare Sans-I/O loop (no locks, no routing)": bare_once,
                 "WSClient.request": lambda i: client.request("ping")}, rounds)
        client.close()
        raw.close()
        bare.close()
    finally:
        echo.stop()


def part_team(work: Path, rounds: int) -> None:
    print("\n2. against a team server")
    server = TeamServer(work)
    try:
        client = WSClient(settings(server.url, "bench2"), "bench:2:1")
        locker = WebSocketLocker(settings(server.url, "bench3"), "bench:3:1")

        def cycle(i: int) -> None:
            locker.acquire(f"CLIENT-{i % 50}", ttl=60)
            locker.release(f"CLIENT-{i % 50}")

        raw, raw_once = sync_client(server.url)
        compare({"websockets sync client (reader thread): ping": raw_once,
                 "WSClient.request: ping": lambda i: client.request("ping"),
                 "WebSocketLocker lock+unlock cycle": cycle}, rounds)
        client.close()
        locker.close()
        raw.close()
    finally:
        server.stop()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(f"client round trips: python {sys.version.split()[0]}, {rounds} interleaved rounds of "
          f"{PER_ROUND:,} per row")
    part_echo(rounds)
    with tempfile.TemporaryDirectory(prefix="orc-team-client-bench-") as tmp:
        part_team(Path(tmp), rounds)


if __name__ == "__main__":
    main()
