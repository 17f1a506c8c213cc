"""Fan-out: one publisher, SUBSCRIBERS WebSocket subscribers of one project, the team server
against a minimal ``websockets.broadcast()`` relay (``_relay_server.py``), interleaved round by
round in one run.

    python bench/fanout_bench.py [SUBSCRIBERS] [--rounds N] [--burst N] [--paced N]

Each round starts fresh subscribers (``team_subscriber.py``, two processes), then publishes a
burst of events as fast as the publisher can send them and reads the server's CPU time (user +
system, from psutil) over the burst: deliveries per server CPU-second is the figure (wall time
on a shared machine says more about the subscribers than the server).  Then events paced at
10/s: publish-to-receive p50/p99 (the issue's targets: >= 1.5x the relay's deliveries per
CPU-second at 1,000 subscribers, p99 <= 100 ms at 10 events/s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil
from _fanout import HERE, Child
from _procs import SECRET, TeamServer, _Listening, percentile, raise_open_files
from websockets.sync.client import connect

from orc_team.tokens import mint_token

PROJECT = "bench"


class Relay(_Listening):
    def __init__(self) -> None:
        super().__init__([sys.executable, str(HERE / "_relay_server.py")], dict(os.environ),
                         "relay")


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def one_round(url: str, pid: int, publish_url: str, subscribers: int, burst: int,
              paced: int) -> dict[str, float]:
    split = [subscribers // 2, subscribers - subscribers // 2]
    token = mint_token(SECRET, "sub", expires_in=3600)
    children = [Child([url, token, PROJECT, str(n), str(burst), str(paced)]) for n in split]
    try:
        for child in children:
            child.expect("ready")
        for child in children:
            child.say("subscribe")
        for child in children:
            child.expect("subscribed")
        with connect(publish_url, compression=None, max_size=None) as publisher:
            def publish(phase: int, i: int) -> None:
                publisher.send(json.dumps({"type": "event", "data": {
                    "event_type": "task.phase", "task_id": "FAN-1", "project_id": PROJECT,
                    "payload": {"phase": phase, "i": i, "t": time.time()}}}))

            before = cpu_seconds(pid)
            for i in range(burst):
                publish(0, i)
            for child in children:
                child.expect("done 0")
            used = cpu_seconds(pid) - before
            slot = time.monotonic()
            for i in range(paced):  # below capacity: latency, not queueing, is measured
                publish(1, i)
                slot += 0.1
                time.sleep(max(0.0, slot - time.monotonic()))
            results = [json.loads(child.expect("{")) for child in children]
    finally:
        for child in children:
            child.stop()
    paced_ms = [x * 1000 for r in results for x in r["latencies"][1]]
    return {"per_cpu_s": burst * subscribers / used, "cpu": used,
            "p50": percentile(paced_ms, 50), "p99": percentile(paced_ms, 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("subscribers", nargs="?", type=int, default=1000,
                        help="subscribers of the project (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server (default 3)")
    parser.add_argument("--burst", type=int, default=100, help="events in each burst")
    parser.add_argument("--paced", type=int, default=30, help="events sent at 10/s")
    args = parser.parse_args()
    raise_open_files()
    print(f"orc-team fan-out bench: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"{args.subscribers:,} subscribers, bursts of {args.burst}, {args.paced} paced at 10/s")
    figures: dict[str, list[dict[str, float]]] = {"team server": [], "websockets relay": []}
    with tempfile.TemporaryDirectory(prefix="orc-fanout-") as work:
        team, relay = TeamServer(Path(work)), Relay()
        try:
            pub_token = mint_token(SECRET, "pub", expires_in=3600)
            targets = {
                "team server": (f"{team.url}", team.proc.pid,
                                f"{team.url}/api/ws?token={pub_token}&client=pub-1"),
                "websockets relay": (f"{relay.url}/r", relay.proc.pid, f"{relay.url}/p")}
            for n in range(args.rounds):
                order = list(targets) if n % 2 == 0 else list(reversed(targets))
                for name in order:
                    url, pid, publish_url = targets[name]
                    figures[name].append(one_round(url, pid, publish_url,
                                                   args.subscribers, args.burst, args.paced))
        finally:
            team.stop()
            relay.stop()
    print(f"\n{'':28}{'deliveries/CPU-s':>18}{'paced p50 ms':>14}{'paced p99 ms':>14}")
    for name, rounds in figures.items():
        for i, f in enumerate(rounds):
            print(f"  {name:24} r{i + 1}{f['per_cpu_s']:>16,.0f}{f['p50']:>14.1f}{f['p99']:>14.1f}")
    team_rate = sorted(f["per_cpu_s"] for f in figures["team server"])
    relay_rate = sorted(f["per_cpu_s"] for f in figures["websockets relay"])
    median = len(team_rate) // 2
    worst_p99 = max(f["p99"] for f in figures["team server"])
    print(f"\n  team server / relay, medians: {team_rate[median] / relay_rate[median]:.2f}x "
          f"deliveries per server CPU-second (target >= 1.5x); team paced p99 at most "
          f"{worst_p99:.1f} ms (target <= 100 ms)")


if __name__ == "__main__":
    main()
