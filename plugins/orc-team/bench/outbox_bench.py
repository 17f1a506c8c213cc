"""The outbox: what publishing costs a run, and how fast a backlog drains.  Prints figures,
asserts nothing.  Servers are child processes on loopback, on free ports, stopped at the end.

1. Publishing through team mode's sink (``OutboxSink.publish``), with the server up (the sender
   thread delivering meanwhile) and down (a port where nothing listens), interleaved call by
   call in one run: microseconds per call of one event (p50/p99) and per event in calls of 100
   (what the executor makes of one pipe read of many lines).
2. Sync throughput: ``orc team sync`` delivering an outbox of 100,000 transcript events, against
   a server with its default rate limit and one with the limit lifted: events per second, wall
   time of the whole command.
3. ``orc run`` against ``orc lock run`` on ``seq 1 20000`` with the server up and down,
   interleaved, ROUNDS rounds: extra microseconds per output line (the median round).

    python bench/outbox_bench.py [ROUNDS]      (3 rounds by default; ~1-2 min)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _procs import SECRET, TeamServer, free_port, percentile
from orc_git.publish import TaskEvent

from orc_team.client.outbox import Outbox
from orc_team.client.sender import Connections, Drainer, Sender
from orc_team.client.settings import ClientSettings
from orc_team.client.sink import OutboxSink, wire_data
from orc_team.tokens import mint_token

us = 1e6
TOKEN = mint_token(SECRET, "bench", expires_in=3600)


def row(*cells: object) -> None:
    print("  " + "".join(f"{c!s:>12}" if i else f"{c!s:<48}" for i, c in enumerate(cells)),
          flush=True)


def git_repo(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


def line_event(task: str, i: int) -> TaskEvent:
    content = f"line {i} " + "x" * 60
    return TaskEvent("task.transcript", task, {"role": "stdout", "content": content}, "bench")


def make_sink(local: Path, url: str) -> OutboxSink:
    box = Outbox(local)
    cid = f"bench:{os.getpid()}:{local.parent.name}"
    settings = ClientSettings(url, TOKEN, request_timeout=10)
    return OutboxSink(box, Sender(Drainer(box, Connections(settings)), cid), cid, "bench")


def quiet(sink: OutboxSink, limit: float = 30.0) -> None:
    """Wait until the sink's sender has delivered everything (the server-up sink), so the next
    block measures only its own sink's work."""
    end = time.monotonic() + limit
    while sink.outbox.counts()["pending"] and time.monotonic() < end:
        time.sleep(0.01)


def publishing(work: Path, url: str, blocks: int = 10, per_block: int = 500) -> None:
    print("\n1. publish through the sink (us); blocks of calls, server up and down alternating")
    dead = f"ws://127.0.0.1:{free_port()}"
    sinks = {"up": make_sink(work / "up" / "local", url),
             "down": make_sink(work / "down" / "local", dead)}
    single: dict[str, list[float]] = {k: [] for k in sinks}
    hundred: dict[str, list[float]] = {k: [] for k in sinks}
    for sink in sinks.values():  # open the files first: the first publish creates one
        sink.publish([line_event("warm", 0)])
    quiet(sinks["up"])
    n = 0
    for _ in range(blocks):
        for name, sink in sinks.items():
            for i in range(per_block):
                n += 1
                event = [line_event("T-1", n)]
                t = time.perf_counter()
                sink.publish(event)
                single[name].append(time.perf_counter() - t)
                if i % 50 == 0:
                    batch = [line_event("T-1", n * 100 + j) for j in range(100)]
                    t = time.perf_counter()
                    sink.publish(batch)
                    hundred[name].append((time.perf_counter() - t) / 100)
            quiet(sinks["up"])
    row("", "p50", "p99", "mean")
    for name in sinks:
        for label, samples in ((f"server {name}: 1 event per call", single[name]),
                               (f"server {name}: per event, 100 per call", hundred[name])):
            row(label, f"{percentile(samples, 50) * us:.1f}",
                f"{percentile(samples, 99) * us:.1f}", f"{sum(samples) / len(samples) * us:.1f}")
    for sink in sinks.values():
        sink.close(0.5)


def backlog(local: Path, n: int) -> None:
    box = Outbox(local)
    cid = f"bench:{os.getpid()}:backlog"
    for start in range(0, n, 1000):
        box.append([(e.event_id, cid, e.made_at, wire_data(e, "bench"))
                    for e in (line_event(f"T-{start // 10000}", i)
                              for i in range(start, start + 1000))])
    box.close()


def orc_env(url: str, autosync: bool = False) -> dict[str, str]:
    return {**os.environ, "ORC_MODE": "team", "ORC_TEAM_URL": url, "ORC_TEAM_TOKEN": TOKEN,
            "ORC_TEAM_AUTOSYNC": "1" if autosync else "0"}


def sync_throughput(work: Path, n: int = 100_000) -> None:
    print(f"\n2. orc team sync of {n:,} events")
    row("", "events/s", "wall s", "delivered")
    for label, args in (("server, default rate limit (100/s, burst 200)",
                         ("--rate", "100", "--burst", "200")),
                        ("server, rate limit lifted", ())):
        server_dir = work / f"sync-server-{len(args)}"
        server_dir.mkdir()
        server = TeamServer(server_dir, *args)
        try:
            repo = git_repo(work / f"sync-repo-{len(args)}")
            backlog(repo / ".orc" / "local", n)
            t = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "orc_git", "team", "sync", "--json",
                                   "--timeout", "600"], cwd=repo, env=orc_env(server.url),
                                  capture_output=True, text=True)
            wall = time.perf_counter() - t
            result = json.loads(done.stdout)
            delivered = result.get("delivered", 0)
            row(label, f"{delivered / wall:,.0f}", f"{wall:.2f}", f"{delivered:,}")
            if done.returncode:
                print("   ", result.get("error"))
        finally:
            server.stop()


def runs(work: Path, url: str, rounds: int, lines: int = 20000) -> None:
    print(f"\n3. orc run vs orc lock run on seq 1 {lines} (wall s, median of {rounds} rounds)")
    dead = f"ws://127.0.0.1:{free_port()}"
    repo = git_repo(work / "run-repo")
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(rounds):
        for state, target in (("up", url), ("down", dead)):
            for cmd in ("lock run", "run"):
                task = f"R-{r}-{state}-{cmd.replace(' ', '')}"
                argv = [sys.executable, "-m", "orc_git", *cmd.split(), task, "--", "seq", "1",
                        str(lines)]
                t = time.perf_counter()
                subprocess.run(argv, cwd=repo, env=orc_env(target, autosync=True), check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                times.setdefault((state, cmd), []).append(time.perf_counter() - t)
    row("", "lock run s", "run s", "extra us/line")
    for state in ("up", "down"):
        base = percentile(times[(state, "lock run")], 50)
        run = percentile(times[(state, "run")], 50)
        row(f"server {state}", f"{base:.3f}", f"{run:.3f}", f"{(run - base) / lines * us:.1f}")
    pending = Outbox(repo / ".orc" / "local").counts()
    print(f"   left in the outbox after the runs: {pending}")


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    work = Path(tempfile.mkdtemp(prefix="orc-outbox-bench-"))
    server = TeamServer(work)
    try:
        publishing(work, server.url)
        runs(work, server.url, rounds)
        sync_throughput(work)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
