"""Shared resources: the round trip of a ``resource_put`` (a compare-and-set that keeps a new
version and its ``resource.updated`` in one commit) and of a ``resource_get``.

``python plugins/orc-team/bench/resources_bench.py [--puts N]`` (a few seconds).  A team server
(a child process on loopback, rate limit out of the way); one client puts N versions of one
resource in turn, each against the version the previous put returned, with 1 KiB and with
64 KiB of content (the largest), bound to a project with one subscriber (so each put also
fans out its event); then reads version 1 N times.  p50/p99 of each; the figures go to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _procs import SECRET, TeamServer, percentile, stop
from websockets.sync.client import ClientConnection, connect

from orc_team.protocol import MAX_RESOURCE_BYTES
from orc_team.tokens import mint_token


def _open(url: str, user: str) -> ClientConnection:
    token = mint_token(SECRET, user, expires_in=3600)
    return connect(f"{url}/api/ws", additional_headers={"Authorization": f"Bearer {token}"},
                   max_size=None, compression=None)


def _ask(ws: ClientConnection, message: dict[str, object]) -> tuple[float, dict[str, object]]:
    started = time.perf_counter()
    ws.send(json.dumps(message))
    while True:
        reply = json.loads(ws.recv(timeout=30))
        if reply.get("id") == message["id"]:
            return time.perf_counter() - started, reply


def run(url: str, puts: int) -> None:
    with _open(url, "writer") as ws, _open(url, "watcher") as watcher:
        watcher.send(json.dumps({"type": "subscribe", "id": 1,
                                 "data": {"project_id": "bench"}}))
        for size in (1024, MAX_RESOURCE_BYTES):
            rid = f"bench-{size}"
            times: list[float] = []
            version = 0
            for i in range(puts):
                content = (f"{i:08d}" * (size // 8 + 1))[:size]
                took, reply = _ask(ws, {"type": "resource_put", "id": f"p{i}", "data": {
                    "resource_id": rid, "content": content, "expected_version": version,
                    "project_id": "bench"}})
                assert reply["type"] == "resource", reply
                data = reply["data"]
                assert isinstance(data, dict)
                version = int(data["version"])
                times.append(took)
            print(f"resource_put {size:>6} B: p50 {percentile(times, 50) * 1e3:.2f} ms, "
                  f"p99 {percentile(times, 99) * 1e3:.2f} ms ({puts} puts)")
        times = []
        for i in range(puts):
            took, reply = _ask(ws, {"type": "resource_get", "id": f"g{i}", "data": {
                "resource_id": f"bench-{MAX_RESOURCE_BYTES}", "version": 1}})
            assert reply["type"] == "resource", reply
            times.append(took)
        print(f"resource_get  65536 B (version 1 of {puts}): p50 "
              f"{percentile(times, 50) * 1e3:.2f} ms, p99 {percentile(times, 99) * 1e3:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="orc-bench-") as tmp:
        server = TeamServer(Path(tmp))
        try:
            run(f"ws://127.0.0.1:{server.port}", args.puts)
        finally:
            stop(server.proc)
        size = (Path(tmp) / "team.sqlite3").stat().st_size
        print(f"store after {2 * args.puts} versions: {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
