"""The team lock+unlock cycle as users make it, with the Redis store: print figures, assert
nothing.  One redis-server (memory-only) on loopback; a team server on it
(``--store redis://…``) and, for reference, one on SQLite; all started here and stopped at
the end.

Each cycle is ``with orc_git.hold(TASK)`` in team mode (a git repository, ORC_MODE=team),
interleaved round by round in one run with a redis-py ``SET NX PX`` + compare-and-delete cycle
against the same redis-server: back to back, then with 5 ms of idle before each cycle (how real
leases are taken).  Target (issue 13): team at most 1.5x redis-py, p99 at most 5 ms.

Then lock grants per second with 100 clients (asyncio WebSocket clients in this process, each
locking and unlocking its own task in a loop for a few seconds), spread over 1 and over 3 server
processes on the same redis-server, and 3 processes with 100 clients each.

    python bench/redis_store_bench.py [ROUNDS]     (4 rounds of 300 cycles per row; ~90 s)
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _procs import SECRET, RedisServer, TeamServer, percentile
from team_bench import COMPARE_AND_DELETE, redis_cycles, row

from orc_team.tokens import mint_token

ms = 1000.0
PER_ROUND = 300
IDLE = 0.005


def hold_cycles(context: Any, n: int, tag: str, idle: float) -> list[float]:
    import orc_git

    out = []
    for i in range(n):
        task = f"HOLD-{tag}-{i % 50}"
        if idle:
            time.sleep(idle)
        t = time.perf_counter()
        with orc_git.hold(task, context=context):
            pass
        out.append(time.perf_counter() - t)
    return out


def idle_redis_cycles(client: Any, script: Any, n: int, tag: str, idle: float) -> list[float]:
    if not idle:
        return redis_cycles(client, script, n, tag)
    out: list[float] = []
    for i in range(n):
        time.sleep(idle)
        out += redis_cycles(client, script, 1, f"{tag}-{i % 50}")
    return out


def team_context(repo: Path, url: str) -> Any:
    """An orc-git Context in team mode against ``url``, as a user's environment sets it."""
    from orc_git.context import Context

    os.environ.update({"ORC_MODE": "team", "ORC_TEAM_URL": url,
                       "ORC_TEAM_TOKEN": mint_token(SECRET, "bench", expires_in=3600)})
    return Context.discover(repo)


def summary(name: str, samples: list[float]) -> float:
    mean = sum(samples) / len(samples)
    row(name, f"{1 / mean:,.0f}", f"{mean * ms:.3f}", f"{percentile(samples, 50) * ms:.3f}",
        f"{percentile(samples, 99) * ms:.3f}")
    return mean


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    why_not = RedisServer.available()
    if why_not:
        print(f"skipped: {why_not}")
        return

    print(f"orc-team Redis store bench: python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="orc-redis-bench-") as tmp:
        work = Path(tmp)
        os.environ["ORC_HOME"] = str(work / "home")
        repo = work / "repo"
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        redis_proc = RedisServer(work)
        servers: list[TeamServer] = []
        try:
            client = redis_proc.connect()
            script = client.register_script(COMPARE_AND_DELETE)
            on_redis = TeamServer(work, "--store", f"redis://127.0.0.1:{redis_proc.port}/0")
            servers.append(on_redis)
            (work / "sqlite").mkdir()
            on_sqlite = TeamServer(work / "sqlite")
            servers.append(on_sqlite)
            contexts = {"redis": team_context(repo, on_redis.url),
                        "sqlite": team_context(repo, on_sqlite.url)}
            for idle in (0.0, IDLE):
                measure(contexts, client, script, rounds, idle)
            on_sqlite.stop()
            url = f"redis://127.0.0.1:{redis_proc.port}/0"
            for extra in range(2):
                (work / f"extra{extra}").mkdir()
                servers.append(TeamServer(work / f"extra{extra}", "--store", url))
            print(f"\nlock grants/s on one Redis, each client locking and unlocking its own "
                  f"task for {SPAN:g} s")
            for n, clients in ((1, CLIENTS), (3, CLIENTS), (3, 3 * CLIENTS)):
                urls = [on_redis.url, *(s.url for s in servers[2:])][:n]
                grants = asyncio.run(grants_per_second(urls, clients))
                row(f"{n} server process{'es' if n > 1 else ''}, {clients} clients",
                    f"{grants:,.0f} grants/s")
        finally:
            for server in servers:
                server.stop()
            redis_proc.stop()


CLIENTS = 100
SPAN = 3.0


async def grants_per_second(urls: list[str], clients: int) -> float:
    """Lock grants per second, ``clients`` clients spread over ``urls`` in turn."""
    from websockets.asyncio.client import connect

    token = mint_token(SECRET, "bench", expires_in=3600)
    counts = [0] * clients
    stop = time.monotonic() + SPAN

    async def client(i: int) -> None:
        async with connect(f"{urls[i % len(urls)]}/api/ws?client=grants:{i}",
                           additional_headers={"Authorization": f"Bearer {token}"},
                           compression=None) as ws:
            while time.monotonic() < stop:
                for kind in ("lock", "unlock"):
                    await ws.send(json.dumps({"type": kind, "id": kind,
                                              "data": {"task_id": f"GRANT-{i}"}}))
                    while json.loads(await ws.recv()).get("id") != kind:
                        pass
                counts[i] += 1

    started = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return sum(counts) / (time.monotonic() - started)


def measure(contexts: dict[str, Any], client: Any, script: Any, rounds: int,
            idle: float) -> None:
    label = "back to back" if not idle else f"{idle * ms:.0f} ms idle before each cycle"
    print(f"\nlock+unlock cycle, {label} ({rounds} interleaved rounds of {PER_ROUND})")
    subjects: dict[str, Callable[[int, str], list[float]]] = {
        "hold(), Redis store": lambda n, tag: hold_cycles(contexts["redis"], n, "r" + tag,
                                                          idle),
        "redis-py SET NX PX + Lua delete": lambda n, tag: idle_redis_cycles(
            client, script, n, tag, idle),
        "hold(), SQLite store": lambda n, tag: hold_cycles(contexts["sqlite"], n, "s" + tag,
                                                           idle),
    }
    samples: dict[str, list[float]] = {name: [] for name in subjects}
    for run in subjects.values():
        run(100, "warm")
    for r in range(rounds):
        for name, run in subjects.items():
            samples[name] += run(PER_ROUND, str(r))
    row("", "cycles/s", "mean ms", "p50 ms", "p99 ms")
    means = {name: summary(name, got) for name, got in samples.items()}
    base = means["redis-py SET NX PX + Lua delete"]
    for name in ("hold(), Redis store", "hold(), SQLite store"):
        print(f"  {name} / redis-py: {means[name] / base:.2f}x (target <= 1.5x); "
              f"p99 {percentile(samples[name], 99) * ms:.2f} ms (target <= 5 ms)")


if __name__ == "__main__":
    main()
