"""Parts 2 and 3 of ``team_bench.py``: server memory per idle connection, and fan-out from one
publisher to many subscribers (``team_subscriber.py`` processes).  Not a benchmark by itself."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from _procs import SECRET, TeamServer, percentile

from orc_team.client.settings import ClientSettings
from orc_team.client.wsclient import WSClient
from orc_team.tokens import mint_token

HERE = Path(__file__).resolve().parent
ms = 1000.0


def settings(url: str, user: str) -> ClientSettings:
    return ClientSettings(url, mint_token(SECRET, user, expires_in=3600), request_timeout=10)


class Child:
    """A subscriber process whose stdout lines are read by a thread into a queue."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "team_subscriber.py"), *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.strip())

    def expect(self, prefix: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if line.startswith(prefix):
                return line

    def say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def part_fanout(work: Path, conns: int, burst: int = 100, paced: int = 40,
                rate: float = 20.0) -> None:
    server = TeamServer(work / "fanout")
    project = "bench"
    children: list[Child] = []
    try:
        publisher = WSClient(settings(server.url, "pub"), "pub:1:1")
        publisher.request("ping")  # the server fully warmed up before the baseline
        base = server.rss()
        token = mint_token(SECRET, "sub", expires_in=3600)
        split = [conns // 2, conns - conns // 2]
        children = [Child([server.url, token, project, str(n), str(burst), str(paced)])
                    for n in split]
        for child in children:
            child.expect("ready")
        idle = server.rss()
        print(f"\n2. memory per idle connection: server RSS {base / 2**20:.1f} MiB -> "
              f"{idle / 2**20:.1f} MiB with {conns:,} connections: "
              f"{(idle - base) / conns / 1024:.1f} KiB each (target <= 30 KiB)")
        for child in children:
            child.say("subscribe")
        for child in children:
            child.expect("subscribed")

        def publish(phase: int, i: int) -> None:
            publisher.send("event", {"event_type": "task.phase", "task_id": "FAN-1",
                                     "project_id": project,
                                     "payload": {"phase": phase, "i": i, "t": time.time()}})

        started = time.time()
        for i in range(burst):
            publish(0, i)
        for child in children:
            child.expect("done 0")
        slot = time.monotonic()
        for i in range(paced):  # paced below capacity: latency, not queueing, is measured
            publish(1, i)
            slot += 1 / rate
            time.sleep(max(0.0, slot - time.monotonic()))
        results = [json.loads(child.expect("{")) for child in children]
        publisher.close()
        lat_burst = [x for r in results for x in r["latencies"][0]]
        lat_paced = [x for r in results for x in r["latencies"][1]]
        end = max(r["last"][0] for r in results)
        print(f"\n3. fan-out, 1 publisher -> {conns:,} subscribers")
        print(f"  burst of {burst} events: {len(lat_burst):,} deliveries in "
              f"{end - started:.2f} s = {len(lat_burst) / (end - started):,.0f} deliveries/s "
              f"(target >= 20,000); latency p50 {percentile(lat_burst, 50) * ms:.0f} ms, "
              f"p99 {percentile(lat_burst, 99) * ms:.0f} ms (queueing included)")
        print(f"  paced, {rate:g} events/s ({rate * conns:,.0f} deliveries/s) x {paced}: "
              f"publish-to-receive p50 {percentile(lat_paced, 50) * ms:.1f} ms, "
              f"p99 {percentile(lat_paced, 99) * ms:.1f} ms (target <= 100 ms)")
    finally:
        for child in children:
            child.stop()
        server.stop()


