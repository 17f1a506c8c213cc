"""Helpers for the team benchmarks: a team server and a redis-server as child processes on
loopback (each started on a free port and stopped at the end), percentiles, the open-file limit.
Not a benchmark itself."""

from __future__ import annotations

import math
import os
import queue
import re
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orc_team.client.settings import ClientSettings
from orc_team.tokens import mint_token

SECRET = "bench-secret-" + "0123456789abcdef" * 3
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


def raise_open_files(wanted: int = 8192) -> int:
    """1,000 connections need 1,000 descriptors on each side: lift the soft limit (children
    inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class _Listening:
    """A child process that says "listening on http://127.0.0.1:PORT" on stderr when ready."""

    def __init__(self, cmd: list[str], env: dict[str, str], what: str) -> None:
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ready: queue.Queue[int] = queue.Queue()
        threading.Thread(target=self._drain, args=(ready,), daemon=True).start()
        try:
            self.port = ready.get(timeout=20)
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"the {what} did not start") from None
        self.url = f"ws://127.0.0.1:{self.port}"

    def _drain(self, ready: queue.Queue[int]) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # keep reading: a full pipe would stall the server
            m = _LISTENING.search(line)
            if m:
                ready.put(int(m[1]))

    def stop(self) -> None:
        stop(self.proc)


class TeamServer(_Listening):
    """``python -m orc_team.server`` with the rate limit out of the way (a benchmark floods)."""

    def __init__(self, workdir: Path, *args: str) -> None:
        env = {**os.environ, "ORC_TEAM_SECRET": SECRET, "ORC_HOME": str(workdir)}
        cmd = [sys.executable, "-m", "orc_team.server", "--port", "0", "--store",
               str(workdir / "team.sqlite3"), "--rate", "1000000", "--burst", "1000000",
               "--send-queue", "8192", "--max-per-peer", "0", "--max-per-user", "0", *args]
        super().__init__(cmd, env, "team server")

    def rss(self) -> int:
        import psutil

        return int(psutil.Process(self.proc.pid).memory_info().rss)


class EchoServer(_Listening):
    """``_echo_server.py``: aiohttp answering each WebSocket message with itself, the floor
    under the team server's figures (same library, same loop, no work of its own)."""

    def __init__(self) -> None:
        super().__init__([sys.executable, str(Path(__file__).with_name("_echo_server.py"))],
                         dict(os.environ), "echo server")


def stop(proc: subprocess.Popen[Any]) -> None:
    """Terminate, and kill if it has not gone within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RedisServer:
    """A memory-only redis-server (no snapshots, no AOF) on a free loopback port, or None."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no",
             "--loglevel", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def available() -> str | None:
        """None when usable, else why not."""
        if shutil.which("redis-server") is None:
            return "redis-server is not installed (apt-get install -y redis-server)"
        try:
            import redis  # noqa: F401
        except ImportError:
            return "redis-py is not installed (pip install redis)"
        return None

    def connect(self) -> Any:
        """A redis-py client, once redis-server answers (it may still be starting)."""
        import redis

        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return client
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        stop(self.proc)


def settings(url: str, user: str) -> ClientSettings:
    """A client of the bench server as ``user``, with a request timeout no bench run reaches."""
    return ClientSettings(url, mint_token(SECRET, user, expires_in=3600), request_timeout=10)
