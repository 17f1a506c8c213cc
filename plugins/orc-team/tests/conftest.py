"""Real server processes on loopback and a small WebSocket test client.

A server is ``python -m orc_git team serve --port 0`` (through the plugin's entry point); the
fixture reads the port from its "listening on" line and checks ``/api/health``.  Clients use the
websockets library.  Nothing waits by sleeping: every wait is for a message, with a timeout.
"""

from __future__ import annotations

import asyncio
import calendar
import itertools
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from orc_git.context import Context
from websockets.asyncio.client import ClientConnection, connect

from orc_team.client.locker import WebSocketLocker
from orc_team.client.settings import ClientSettings
from orc_team.client.team import TeamLocker
from orc_team.tokens import mint_token

SECRET = "test-secret-" + "0123456789abcdef" * 3
WAIT = 5.0  # seconds any single expected message may take
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


class ServerProc:
    """One ``orc team serve`` process; its stderr is collected for assertions on the log."""

    def __init__(self, store: Path | str, home: Path, args: list[str], port: int = 0) -> None:
        self.store, self.home, self.args = store, home, args
        self.port = port
        self.lines: list[str] = []
        self._logged = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None
        self.start()

    def start(self) -> None:
        env = {**os.environ, "ORC_TEAM_SECRET": SECRET, "ORC_HOME": str(self.home)}
        cmd = [sys.executable, "-m", "orc_git", "team", "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--store", str(self.store), *self.args]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        ready: queue.Queue[int] = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc, ready), daemon=True).start()
        try:
            self.port = ready.get(timeout=15)
        except queue.Empty:
            self.kill()
            raise RuntimeError("server did not start:\n" + self.log) from None
        assert self.http("/api/health") == (200, {"status": "ok"})

    def _read(self, proc: subprocess.Popen[str], ready: queue.Queue[int]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            with self._logged:
                self.lines.append(line)
                self._logged.notify_all()
            m = _LISTENING.search(line)
            if m:
                ready.put(int(m[1]))

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def logged(self, text: str, timeout: float = WAIT) -> bool:
        """Wait until the server's log holds ``text``: its stderr is read by another thread,
        so a line written just before a reply may not be read yet when the reply is."""
        with self._logged:
            return self._logged.wait_for(lambda: text in self.log, timeout)

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ws_url(self, token: str | None, client: str | None = None) -> str:
        query = [f"token={token}"] if token else []
        if client:
            query.append(f"client={client}")
        return f"ws://{self.base}/api/ws" + ("?" + "&".join(query) if query else "")

    def http(self, path: str, token: str | None = None, *, method: str = "GET",
             body: bytes | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(f"http://{self.base}{path}", data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=WAIT) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                return exc.code, json.loads(body)
            except ValueError:
                return exc.code, body.decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=15)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=15)


ServerFactory = Callable[..., ServerProc]


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """``start_server("--away-after", "1", ...)``: a fresh server with its own store.  With
    ORC_TEAM_TEST_STORE=redis every server gets a Redis store instead (a database of its own on
    one redis-server, the same one again for the same ``store`` path): the server tests then
    run against the Redis store."""
    started: list[ServerProc] = []
    databases: dict[Path, str] = {}
    redis: list[RedisProc] = []

    def where(path: Path | str) -> Path | str:
        if os.environ.get("ORC_TEAM_TEST_STORE") != "redis" or isinstance(path, str):
            return path  # a redis:// URL: another server's store
        if not redis:
            redis.append(RedisProc(tmp_path_factory.mktemp("redis"), databases=1000))
        if path not in databases:
            databases[path] = f"redis://127.0.0.1:{redis[0].port}/{len(databases)}"
        return databases[path]

    def start(*args: str, store: Path | str | None = None) -> ServerProc:
        home = tmp_path_factory.mktemp("orc-home")
        server = ServerProc(where(store or home / "team.sqlite3"), home, list(args))
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()
    for proc in redis:
        proc.stop()


@pytest.fixture(scope="session")
def server(start_server: ServerFactory) -> ServerProc:
    """A shared server with default settings; tests keep apart by unique task ids."""
    return start_server()


_ids = itertools.count(1)


def unique(prefix: str = "TASK") -> str:
    return f"{prefix}-{next(_ids)}-{os.getpid()}"


def token(user: str, role: str = "member", *, name: str | None = None,
          expires_in: float = 3600, now: float | None = None, secret: str = SECRET) -> str:
    return mint_token(secret, user, name=name or user.title(), email=f"{user}@example.com",
                      role=role, expires_in=expires_in, now=now)


class Client:
    """A WebSocket client that keeps what it has not been asked for yet, in arrival order."""

    def __init__(self, ws: ClientConnection, user: str, client: str | None) -> None:
        self.ws = ws
        self.user = user
        self.client = client
        self.inbox: list[dict[str, Any]] = []
        self._n = itertools.count(1)

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def expect(self, match: Callable[[dict[str, Any]], bool],
                     timeout: float = WAIT) -> dict[str, Any]:
        for i, message in enumerate(self.inbox):
            if match(message):
                return self.inbox.pop(i)
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await self.ws.recv())
                assert isinstance(message, dict)
                if match(message):
                    return message
                self.inbox.append(message)

    async def request(self, type_: str, data: dict[str, Any] | None = None,
                      timeout: float = WAIT, **extra: Any) -> dict[str, Any]:
        req_id = f"{self.user}-{next(self._n)}"
        message: dict[str, Any] = {"type": type_, "id": req_id, **extra}
        if data is not None:
            message["data"] = data
        await self.send(message)
        return await self.expect(lambda m: m.get("id") == req_id, timeout)

    async def event(self, event_type: str, task_id: str | None = None,
                    timeout: float = WAIT) -> dict[str, Any]:
        def match(m: dict[str, Any]) -> bool:
            data = m.get("data") or {}
            return (m.get("type") == "event" and data.get("event_type") == event_type
                    and (task_id is None or data.get("task_id") == task_id))
        data: dict[str, Any] = (await self.expect(match, timeout))["data"]
        return data

    async def presence(self, user: str, status: str, timeout: float = WAIT) -> dict[str, Any]:
        def match(m: dict[str, Any]) -> bool:
            data = m.get("data") or {}
            return (m.get("type") == "presence" and "id" not in m
                    and data.get("user_id") == user and data.get("status") == status)
        data: dict[str, Any] = (await self.expect(match, timeout))["data"]
        return data

    async def barrier(self) -> list[dict[str, Any]]:
        """Everything the server sent before answering a ping (it answers in order)."""
        await self.request("ping")
        got, self.inbox = self.inbox, []
        return got

    async def lock(self, task_id: str, **data: Any) -> dict[str, Any]:
        reply = await self.request("lock", {"task_id": task_id, **data})
        assert reply["type"] == "lock_result", reply
        result: dict[str, Any] = reply["data"]
        return result

    async def close(self) -> None:
        await self.ws.close()


@pytest.fixture
async def connect_as(server: ServerProc) -> Any:
    """``await connect_as("alice", role="admin", client="laptop", on=server)``."""
    clients: list[Client] = []

    async def open_client(user: str, role: str = "member", client: str | None = "",
                          on: ServerProc | None = None, **kwargs: Any) -> Client:
        """``client=""`` gives each connection its own instance id; None sends none."""
        target = on or server
        if client == "":
            client = unique(f"{user}-client")
        ws = await connect(target.ws_url(token(user, role), client), open_timeout=WAIT,
                           **kwargs)
        c = Client(ws, user, client)
        clients.append(c)
        return c

    yield open_client
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def elapsed_since(iso: str) -> float:
    """Seconds from an RFC 3339 UTC time (with milliseconds) to now."""
    whole, _, frac = iso.rstrip("Z").partition(".")
    t = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return time.time() - (t + float(f"0.{frac or 0}"))


# -- the team client ----------------------------------------------------------------------------


def settings_for(server: ServerProc | str, user: str, role: str = "member",
                 **options: Any) -> ClientSettings:
    """Client settings for ``user`` (quick reconnects: tests wait for them)."""
    base = server if isinstance(server, str) else f"ws://{server.base}"
    options.setdefault("backoff_cap", 0.5)
    return ClientSettings(base, token(user, role), **options)


LockerFactory = Callable[..., WebSocketLocker]


@pytest.fixture
def make_locker() -> Iterator[LockerFactory]:
    """``make_locker(server, "alice", client="laptop", role=..., **settings)``; closed after."""
    made: list[WebSocketLocker] = []

    def make(server: ServerProc | str, user: str, client: str | None = None,
             role: str = "member", ttl: int = 60, **options: Any) -> WebSocketLocker:
        locker = WebSocketLocker(settings_for(server, user, role, **options),
                                 client or unique(f"{user}-inst"), ttl=ttl)
        made.append(locker)
        return locker

    yield make
    for locker in made:
        locker.close()


def dead_url() -> str:
    """A loopback URL where nothing listens (a port just bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


def git_repo(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


TeamContext = Callable[..., Context]


@pytest.fixture
def team_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TeamContext]:
    """``team_context(server_or_url, "alice")``: an orc-git Context for one git repository in
    team mode, with the environment a user would set (ORC_TEAM_URL, ORC_TEAM_TOKEN)."""
    repo = git_repo(tmp_path / "repo")
    monkeypatch.setenv("ORC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORC_MODE", "team")
    made: list[Context] = []

    def make(server: ServerProc | str, user: str, role: str = "member") -> Context:
        base = server if isinstance(server, str) else f"ws://{server.base}"
        monkeypatch.setenv("ORC_TEAM_URL", base)
        monkeypatch.setenv("ORC_TEAM_TOKEN", token(user, role))
        ctx = Context.discover(repo)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        locker = ctx._locker
        if isinstance(locker, TeamLocker):
            locker.close()


def run_orc(*args: str, cwd: Path, env: dict[str, str],
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orc_git", *args], cwd=cwd,
                          env={**os.environ, **env}, text=True, capture_output=True,
                          timeout=timeout)


class Lines:
    """A child's stream read by a thread, so tests can wait for a line with a deadline."""

    def __init__(self, stream: Any) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line)

    def wait_for(self, text: str, timeout: float = WAIT) -> str:
        deadline = time.monotonic() + timeout
        for line in self.seen:
            if text in line:
                return line
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line with {text!r} within {timeout} s; got:\n"
                                     + "".join(self.seen))
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line

    @property
    def text(self) -> str:
        while True:
            try:
                self.seen.append(self._queue.get_nowait())
            except queue.Empty:
                return "".join(self.seen)


# -- redis-server -------------------------------------------------------------------------------


class RedisProc:
    """A real redis-server on a free loopback port with its AOF in ``workdir``; ready once it
    logs "Ready to accept connections".  ``kill()`` is kill -9; ``start()`` again on the same
    port and directory replays the AOF."""

    def __init__(self, workdir: Path, *, appendonly: bool = True, databases: int = 16,
                 args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.appendonly = appendonly
        self.databases = databases
        self.args = args
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port: int = s.getsockname()[1]
        self.proc: subprocess.Popen[str] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.workdir),
             "--daemonize", "no", "--loglevel", "notice", "--databases", str(self.databases),
             *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True)
        lines = Lines(self.proc.stdout)
        lines.wait_for("Ready to accept connections", timeout=15)

    def kill(self) -> None:
        """kill -9: what it wrote to its AOF is all that survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)

    def flush(self) -> None:
        import redis

        client = redis.Redis(port=self.port)
        client.flushall()
        client.close()


REDIS_MISSING = shutil.which("redis-server") is None
sqlite_only = pytest.mark.skipif(os.environ.get("ORC_TEAM_TEST_STORE") == "redis",
                                 reason="about the SQLite store's own file (ORC_TEAM_TEST_STORE)")
needs_redis = pytest.mark.skipif(REDIS_MISSING, reason="redis-server is not installed "
                                 "(apt-get install -y redis-server)")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProc]:
    """One redis-server (AOF on) for the session; tests keep apart by unique ids or flush."""
    if REDIS_MISSING:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    server = RedisProc(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()
