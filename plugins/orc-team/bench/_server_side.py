"""Part 1b of ``team_bench.py``: the server's own work per lock+unlock cycle, in this process,
without sockets, so client and transport costs (and their noise) are out of the figure:

- the store alone (``SQLiteStore.acquire`` + ``release``, each committed), with and without a
  project (a project adds the offset that the lock events carry);
- the whole request path (``Dispatcher.handle`` of a lock and an unlock message: size check,
  JSON, rate limit, validation, presence, the store, the reply's encoding and its write to a
  transport that discards it).

Not a benchmark by itself.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, cast

from _procs import percentile

from orc_team.server.config import ServerConfig
from orc_team.server.connection import Connection
from orc_team.server.sqlite_store import SQLiteStore
from orc_team.server.state import Server
from orc_team.server.store import ClientInstance
from orc_team.tokens import Claims

us = 1e6


class _Discard:
    """Both the transport and the WebSocket of a connection whose reader takes every frame at
    once."""

    closed = False

    def write(self, data: bytes) -> None:
        pass

    async def send_frame(self, data: bytes, opcode: int) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass

    @property
    def transport(self) -> _Discard:
        return self


async def _store_cycles(store: SQLiteStore, n: int, project: str | None) -> list[float]:
    holder = ClientInstance("bench", "bench:1", "Bench", None)
    out = []
    for i in range(n):
        task = f"CYCLE-{i % 50}"
        t = time.perf_counter()
        await store.acquire(task, holder, 60, time.time(), project_id=project)
        await store.release(task, holder, time.time())
        out.append(time.perf_counter() - t)
    return out


async def _dispatch_cycles(server: Server, conn: Connection, n: int) -> list[float]:
    messages = [(b'{"type":"lock","id":"l","data":{"task_id":"CYCLE-%d","ttl":60}}' % i,
                 b'{"type":"unlock","id":"u","data":{"task_id":"CYCLE-%d"}}' % i)
                for i in range(50)]
    handle = server.dispatcher.handle
    out = []
    for i in range(n):
        lock, unlock = messages[i % 50]
        t = time.perf_counter()
        await handle(conn, lock)
        await handle(conn, unlock)
        out.append(time.perf_counter() - t)
    return out


def _row(name: str, samples: list[float]) -> None:
    mean = sum(samples) / len(samples)
    print(f"  {name:<34}{mean * us:>14.1f}{percentile(samples, 50) * us:>14.1f}"
          f"{percentile(samples, 99) * us:>14.1f}")


async def _measure(work: Path, rounds: int, per_round: int) -> None:
    # The presence news each lock and unlock queues is drained only when the loop gets a turn,
    # which these cycles never give it: a queue deep enough for all of them.
    config = ServerConfig(secret="x" * 32, store=str(work / "team.sqlite3"), rate=1e9,
                          burst=1e9, send_queue=4 * (rounds + 1) * per_round)
    store = SQLiteStore(config.store)
    server = Server(config, store)
    stand_in = cast(Any, _Discard())
    conn = Connection(server.hub.next_id(), Claims("bench", "Bench", None, "member", 4e9),
                      "bench:1", "in-process", stand_in, stand_in, config)
    server.hub.add(conn)
    writer = asyncio.create_task(conn.writer())  # drains what is queued (the presence news)
    server.presence.connect(conn)
    bare: list[float] = []
    project: list[float] = []
    handled: list[float] = []
    await _store_cycles(store, 300, None)
    await _dispatch_cycles(server, conn, 300)
    for _ in range(rounds):  # interleaved, so a noisy neighbour hits all three alike
        bare += await _store_cycles(store, per_round, None)
        project += await _store_cycles(store, per_round, "bench-project")
        handled += await _dispatch_cycles(server, conn, per_round)
    conn.closing = True
    writer.cancel()
    await store.close()
    print(f"  {'':<34}{'mean us':>14}{'p50 us':>14}{'p99 us':>14}")
    _row("store: acquire + release", bare)
    _row("  the same, with a project", project)
    _row("request path: lock + unlock", handled)


def part_server_side(work: Path, rounds: int = 4, per_round: int = 1000) -> None:
    print("\n1b. the server's own work per lock+unlock cycle (in-process, no sockets; "
          "4 interleaved rounds of 1,000)")
    asyncio.run(_measure(work, rounds, per_round))
