"""Helpers shared by the ``orc lock`` CLI tests: JSON checks, other holders, ptys."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from conftest import (
    lock_path,
    orc,
    orc_argv,
)

from orc_git.locking import lockyaml
from orc_git.locking.info import LockInfo

LOCK_KEYS = {"task_id", "locked", "stale", "stale_reason", "owner", "user", "host", "pid",
             "acquired_at", "heartbeat_at", "expires_at", "ttl", "token", "mine"}
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
ESC = "\x1b"



def one_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """Exactly one JSON object on stdout, with the envelope every answer carries."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, (proc.stdout, proc.stderr)
    out = json.loads(lines[0])
    assert isinstance(out, dict)
    assert out["schema"] == 1
    assert "mode" in out
    if "error" in out:
        assert set(out["error"]) == {"code", "message"}
        assert isinstance(out["error"]["code"], str) and out["error"]["code"]
        assert isinstance(out["error"]["message"], str) and out["error"]["message"]
    return out


def check_lock(lock: dict[str, Any]) -> dict[str, Any]:
    """A lock object has exactly the documented keys, with the documented types."""
    assert set(lock) == LOCK_KEYS, sorted(lock)
    assert isinstance(lock["task_id"], str)
    for key in ("locked", "stale", "mine"):
        assert isinstance(lock[key], bool), (key, lock)
    assert lock["stale_reason"] in (None, "expired", "holder-dead", "unreadable")
    assert lock["stale"] == (lock["stale_reason"] is not None)
    for key in ("acquired_at", "heartbeat_at", "expires_at"):
        assert lock[key] is None or RFC3339.fullmatch(lock[key]), (key, lock[key])
    for key in ("pid", "ttl", "token"):
        assert lock[key] is None or (isinstance(lock[key], int)
                                     and not isinstance(lock[key], bool)), (key, lock)
    if not lock["locked"]:
        assert lock["owner"] is None and lock["pid"] is None and lock["token"] is None
    return lock


def on_disk(repo: Path, task: str) -> LockInfo:
    return lockyaml.parse(lock_path(repo, task).read_bytes(), task)


def hold_here(repo: Path, task: str, *extra: str) -> dict[str, Any]:
    """``orc lock acquire`` from this test process: pytest is the holder."""
    proc = orc("lock", "acquire", task, "--json", *extra, cwd=repo)
    assert proc.returncode == 0, proc.stderr
    lock: dict[str, Any] = one_json(proc)["lock"]
    assert lock["pid"] == os.getpid()
    return lock


def release_here(repo: Path, task: str) -> None:
    proc = orc("lock", "release", task, cwd=repo)
    assert proc.returncode == 0, proc.stderr


class FdReader:
    """Reads a pipe or a pty master, never blocking past a deadline."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = b""
        self.eof = False

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def _read_once(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: every slave end of the pty is closed
            chunk = b""
        if not chunk:
            self.eof = True
        self.data += chunk

    def until(self, needle: str, timeout: float = 30, count: int = 1) -> str:
        deadline = time.monotonic() + timeout
        while self.data.count(needle.encode()) < count:
            if self.eof:
                raise AssertionError(f"output ended before {needle!r}: {self.text!r}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {needle!r} within {timeout} s: {self.text!r}")
            self._read_once(left)
        return self.text

    def rest(self, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self._read_once(deadline - time.monotonic())
        return self.text


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process group (a wrapper and the orc below it) if the test left it running."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@contextmanager
def tty_orc(*args: str, cwd: Path, env: dict[str, str] | None = None,
            other_parent: bool = True) -> Iterator[tuple[subprocess.Popen[bytes], FdReader]]:
    """The CLI with stdin and stderr on a pty (a person at a terminal), stdout a pipe."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(orc_argv(*args, other_parent=other_parent), cwd=cwd, stdin=slave,
                            stdout=subprocess.PIPE, stderr=slave,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    os.close(slave)
    try:
        yield proc, FdReader(master)
    finally:
        _stop(proc)
        os.close(master)


@contextmanager
def piped_orc(*args: str, cwd: Path, env: dict[str, str] | None = None,
              other_parent: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(orc_argv(*args, other_parent=other_parent), cwd=cwd,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
                            start_new_session=True)
    try:
        yield proc
    finally:
        _stop(proc)


def catches(pid: int, sig: int) -> bool:
    """Whether process ``pid`` has a handler installed for ``sig`` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


