"""Unauthenticated sockets cannot starve the server: handshake deadline, caps, descriptor limit.

Real server processes on loopback with a lowered RLIMIT_NOFILE, real idle sockets.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from conftest import Client, ServerProc, token


class LimitedServer(ServerProc):
    """A server whose RLIMIT_NOFILE is (soft, hard) from its start."""

    def __init__(self, store: Path, home: Path, args: list[str], limit: tuple[int, int]) -> None:
        self.limit = limit
        super().__init__(store, home, args)

    def start(self) -> None:
        soft, hard = self.limit
        real = subprocess.Popen

        def limited(*a: object, **kw: object) -> subprocess.Popen[str]:
            kw["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            return real(*a, **kw)  # type: ignore[call-overload, no-any-return]

        subprocess.Popen = limited  # type: ignore[assignment, misc]
        try:
            super().start()
        finally:
            subprocess.Popen = real  # type: ignore[misc]


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[list[LimitedServer]]:
    made: list[LimitedServer] = []
    yield made
    for s in made:
        s.kill()


def _idle_sockets(port: int, n: int, half: bool) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        socks.append(s)
    if half:  # half a request: a line and one header, never the blank line
        for s in socks:
            s.setblocking(True)
            s.settimeout(5)
            with contextlib.suppress(OSError):
                s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
    return socks


def _health_within(server: ServerProc, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1) as s:
                s.settimeout(1)
                s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return True
        except OSError:
            continue
    return False


@pytest.mark.parametrize("half", [False, True], ids=["silent", "half-request"])
async def test_idle_sockets_past_the_descriptor_limit_do_not_starve_it(
        tmp_path: Path, limited: list[LimitedServer], half: bool) -> None:
    server = LimitedServer(tmp_path / "s.db", tmp_path, ["--handshake-timeout", "1",
                                                         "--max-per-peer", "1000"], (64, 64))
    limited.append(server)
    socks = _idle_sockets(server.port, 80, half)
    try:
        assert server.logged("cannot accept connections: Too many open files", timeout=10)
        assert _health_within(server, time.monotonic() + 30), server.log[-3000:]
        ws = await connect(server.ws_url(token("alice")), open_timeout=10)
        assert (await Client(ws, "alice", None).request("ping"))["type"] == "pong"
        await ws.close()
    finally:
        for s in socks:
            s.close()
    assert server.logged("no complete request within 1s")
    assert "Traceback" not in server.log, server.log[-3000:]
    assert server.log.count("cannot accept connections") <= 5, server.log[-3000:]


def test_the_soft_open_file_limit_is_raised_to_the_hard_one(
        tmp_path: Path, limited: list[LimitedServer]) -> None:
    server = LimitedServer(tmp_path / "s.db", tmp_path, [], (64, 256))
    limited.append(server)
    assert "open-file limit raised from 64 to 256" in server.log


async def test_connections_per_peer_are_capped(start_server: object) -> None:
    server: ServerProc = start_server("--max-per-peer", "4")  # type: ignore[operator]
    socks = _idle_sockets(server.port, 4, False)
    try:
        assert server.logged("listening on")
        deadline = time.monotonic() + 10
        refused = b""
        while time.monotonic() < deadline and b"429" not in refused:
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
                s.settimeout(5)
                try:
                    refused = s.recv(1000)
                except OSError:
                    refused = b""
        assert refused.startswith(b"HTTP/1.1 429"), refused
        assert b"too many connections from this address" in refused
    finally:
        for s in socks:
            s.close()
    assert server.logged("refused a connection from 127.0.0.1")
    assert _health_within(server, time.monotonic() + 10)


async def test_connections_per_user_are_capped(start_server: object) -> None:
    server: ServerProc = start_server("--max-per-user", "2")  # type: ignore[operator]
    first = [await connect(server.ws_url(token("carol")), open_timeout=5) for _ in range(2)]
    with pytest.raises(InvalidStatus) as info:
        await connect(server.ws_url(token("carol")), open_timeout=5)
    assert info.value.response.status_code == 429
    assert b"--max-per-user" in (info.value.response.body or b"")
    other = await connect(server.ws_url(token("dave")), open_timeout=5)  # others unaffected
    await first[0].close()
    again = None
    for _ in range(50):  # a slot frees once the server has seen the close
        try:
            again = await connect(server.ws_url(token("carol")), open_timeout=5)
            break
        except InvalidStatus:
            await first[1].ping()
    assert again is not None
    for ws in (*first[1:], other, again):
        await ws.close()


