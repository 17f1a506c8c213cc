"""Team mode benchmarks: print figures, assert nothing.  Client and server are separate
processes on loopback; every server is started here on a free port and stopped at the end.

1. lock+unlock cycle through the team server (``WebSocketLocker.acquire`` + ``release``: two
   WebSocket round trips, each a SQLite transaction) vs the same cycle through redis-py against a
   local memory-only redis-server (``SET NX PX`` + compare-and-delete Lua); p50/p99.  Skipped with
   a note when redis-server or redis-py is missing.  The same raw client against an aiohttp echo
   server gives the transport floor: the team rows minus that row is the server's own work.
1b. that server work measured in-process, without sockets: the store alone, and the whole
   request path (``Dispatcher.handle``) with it.
2. memory per idle connection: server RSS before and after 1,000 idle connections, per connection.
3. fan-out from one publisher to those 1,000 subscribers (two subscriber processes): deliveries/s
   for a burst, and publish-to-receive latency for a paced stream (p50/p99).
4. time for an acquire to fall back to the file lease when the server is down (refused connect),
   when it accepts but never answers (bounded by the 0.5 s open timeout), and ``orc lock acquire``
   as a whole command against a dead server, with p2p mode for reference.

    python bench/team_bench.py [CONNECTIONS] [--part cycles|server|fanout|fallback ...]
        (all parts: about 30-40 s; needs orc-team installed)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _fanout import part_fanout
from _procs import (
    SECRET,
    EchoServer,
    RedisServer,
    TeamServer,
    free_port,
    percentile,
    raise_open_files,
    settings,
)
from _server_side import part_server_side

from orc_team.client.locker import WebSocketLocker
from orc_team.client.wsclient import WSClient
from orc_team.tokens import mint_token

logging.getLogger("orc_git").addHandler(logging.NullHandler())  # fallback warnings: expected
HERE = Path(__file__).resolve().parent
ms = 1000.0


def row(*cells: object) -> None:
    print("  " + "".join(f"{c!s:>14}" if i else f"{c!s:<44}" for i, c in enumerate(cells)))


def summary(name: str, samples: list[float]) -> float:
    mean = sum(samples) / len(samples)
    row(name, f"{1 / mean:,.0f}", f"{mean * ms:.3f}", f"{percentile(samples, 50) * ms:.3f}",
        f"{percentile(samples, 99) * ms:.3f}")
    return mean


# -- 1. lock+unlock cycles --------------------------------------------------------------------


def team_cycles(locker: WebSocketLocker, n: int, tag: str) -> list[float]:
    out = []
    for i in range(n):
        task = f"CYCLE-{tag}-{i % 50}"
        t = time.perf_counter()
        locker.acquire(task, ttl=60)
        locker.release(task)
        out.append(time.perf_counter() - t)
    return out


def client_cycles(client: WSClient, n: int, tag: str) -> list[float]:
    out = []
    for i in range(n):
        task = f"CYCLE-{tag}-{i % 50}"
        t = time.perf_counter()
        client.request("lock", {"task_id": task, "ttl": 60})
        client.request("unlock", {"task_id": task})
        out.append(time.perf_counter() - t)
    return out


def raw_cycles(ws: Any, n: int, tag: str) -> list[float]:
    """The floor: the websockets sync client read by the requesting thread itself."""
    out = []
    for i in range(n):
        task = f"CYCLE-{tag}-{i % 50}"
        t = time.perf_counter()
        for kind, rid in (("lock", "l"), ("unlock", "u")):
            ws.send(json.dumps({"type": kind, "id": rid, "data": {"task_id": task}}))
            while json.loads(ws.recv()).get("id") != rid:
                pass
        out.append(time.perf_counter() - t)
    return out


def redis_cycles(client: Any, script: Any, n: int, tag: str) -> list[float]:
    out = []
    for i in range(n):
        key, token = f"lock:CYCLE-{tag}-{i % 50}", uuid.uuid4().hex
        t = time.perf_counter()
        assert client.set(key, token, nx=True, px=60_000)
        assert script(keys=[key], args=[token]) == 1
        out.append(time.perf_counter() - t)
    return out


COMPARE_AND_DELETE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def part_cycles(work: Path, rounds: int = 4, per_round: int = 1000) -> None:
    print("\n1. lock+unlock cycle (one client, sequential; 4 interleaved rounds of 1,000)")
    server = TeamServer(work / "cycles")
    echo = EchoServer()
    why_not = RedisServer.available()
    redis_proc = None if why_not else RedisServer(work)
    try:
        from websockets.sync.client import connect

        locker = WebSocketLocker(settings(server.url, "bench"), "bench:1:1")
        client = WSClient(settings(server.url, "bench2"), "bench:2:1")
        raw = connect(f"{server.url}/api/ws?client=bench:3:1", compression=None, proxy=None,
                      additional_headers={"Authorization": "Bearer "
                                          + mint_token(SECRET, "bench3", expires_in=3600)},
                      legacy=True)
        echoed = connect(f"{echo.url}/api/ws", compression=None, proxy=None, legacy=True)
        team_cycles(locker, 300, "warm")
        client_cycles(client, 300, "warm")
        raw_cycles(raw, 300, "warm")
        raw_cycles(echoed, 300, "warm")
        team: list[float] = []
        bare: list[float] = []
        floor: list[float] = []
        transport: list[float] = []
        red: list[float] = []
        rclient = script = None
        if redis_proc is not None:
            rclient = redis_proc.connect()
            script = rclient.register_script(COMPARE_AND_DELETE)
            redis_cycles(rclient, script, 300, "warm")
        for r in range(rounds):
            team += team_cycles(locker, per_round, str(r))
            bare += client_cycles(client, per_round, str(r))
            floor += raw_cycles(raw, per_round, str(r))
            transport += raw_cycles(echoed, per_round, str(r))
            if rclient is not None:
                red += redis_cycles(rclient, script, per_round, str(r))
        locker.close()
        client.close()
        raw.close()
        echoed.close()
        row("", "cycles/s", "mean ms", "p50 ms", "p99 ms")
        team_mean = summary("team server (WebSocketLocker)", team)
        summary("  WSClient requests only", bare)
        summary("  websockets sync client (own reader thread)", floor)
        summary("  the same against an aiohttp echo", transport)
        if red:
            redis_mean = summary("redis-py SET NX PX + Lua delete", red)
            print(f"  team/redis time per cycle: {team_mean / redis_mean:.2f}x (target <= 1.5x);"
                  f" team p99 {percentile(team, 99) * ms:.2f} ms (target <= 5 ms)")
            print("  (the team server commits each grant and release to SQLite; redis keeps "
                  "them in memory only)")
            print("  (the client's share alone: python bench/client_bench.py)")
        else:
            print(f"  redis column skipped: {why_not}")
    finally:
        server.stop()
        echo.stop()
        if redis_proc is not None:
            redis_proc.stop()


# -- 4. fallback -------------------------------------------------------------------------------


def part_fallback(work: Path) -> None:
    from orc_git.context import Context

    print("\n4. acquire falling back to the file lease when the server is down")
    repo = work / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    dead = f"ws://127.0.0.1:{free_port()}"
    env = {"ORC_HOME": str(work / "home"), "ORC_MODE": "team", "ORC_TEAM_URL": dead,
           "ORC_TEAM_TOKEN": mint_token(SECRET, "bench", expires_in=3600)}
    saved = dict(os.environ)
    os.environ.update(env)
    silent = socket.socket()
    try:
        locker = Context.discover(repo).locker()
        samples = []
        for i in range(30):
            t = time.perf_counter()
            locker.acquire(f"FB-{i}")
            samples.append(time.perf_counter() - t)
            locker.release(f"FB-{i}")
        row("", "p50 ms", "max ms")
        row("refused connect (server killed)", f"{percentile(samples, 50) * ms:.2f}",
            f"{max(samples) * ms:.2f}")
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # TCP handshakes complete; nobody ever answers
        os.environ["ORC_TEAM_URL"] = f"ws://127.0.0.1:{silent.getsockname()[1]}"
        locker = Context.discover(repo).locker()
        hung = []
        for i in range(3):
            t = time.perf_counter()
            locker.acquire(f"FBS-{i}")
            hung.append(time.perf_counter() - t)
            locker.release(f"FBS-{i}")
        row("server accepts, never answers", f"{percentile(hung, 50) * ms:.0f}",
            f"{max(hung) * ms:.0f}")
        os.environ["ORC_TEAM_URL"] = dead
        for mode in ("team", "p2p"):
            walls = []
            for i in range(3):
                t = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "orc_git", "lock", "acquire",
                                       f"CLI-{mode}-{i}", "--json"], cwd=repo, text=True,
                                      capture_output=True, env={**os.environ, "ORC_MODE": mode})
                walls.append(time.perf_counter() - t)
                assert done.returncode == 0, done.stderr
            label = ("`orc lock acquire`, server down" if mode == "team"
                     else "`orc lock acquire`, p2p (reference)")
            row(label, f"{percentile(walls, 50) * ms:.0f}", f"{max(walls) * ms:.0f}")
        print("  target: fallback <= 1 s")
    finally:
        silent.close()
        os.environ.clear()
        os.environ.update(saved)


PARTS = ("cycles", "server", "fanout", "fallback")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Team mode benchmarks: print figures, assert nothing.",
        epilog="Parts: cycles (1: lock+unlock through the server vs redis), server (1b: the "
               "server's own work in-process), fanout (2 and 3: idle-connection memory and "
               "fan-out), fallback (4: the server down).")
    parser.add_argument("connections", nargs="?", type=int, default=1000, metavar="CONNECTIONS",
                        help="idle connections and subscribers for parts 2 and 3 (1000)")
    parser.add_argument("--part", action="append", choices=PARTS, dest="parts",
                        help="run only this part (repeatable; default: all)")
    args = parser.parse_args()
    if args.connections < 1:
        parser.error("CONNECTIONS must be at least 1")
    return args


def main() -> None:
    args = arguments()
    parts = args.parts or PARTS
    limit = raise_open_files(max(8192, args.connections * 3))
    print(f"orc-team benchmarks: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"open-file limit {limit}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="orc-team-bench-") as tmp:
        work = Path(tmp)
        for name in ("cycles", "server", "fanout"):
            (work / name).mkdir()
        if "cycles" in parts:
            part_cycles(work)
        if "server" in parts:
            part_server_side(work / "server")
        if "fanout" in parts:
            part_fanout(work, args.connections)
        if "fallback" in parts:
            part_fallback(work)
    print(f"\n(total {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
