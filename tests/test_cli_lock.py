"""``orc lock …`` through the real CLI in subprocesses: exit statuses, the ``--json`` contract,
who holds a lease taken with ``orc lock acquire``, ``lock run``, and the conflict prompt on a TTY.

A lease taken by ``orc lock acquire`` belongs to the calling process: from this test process it
is held by pytest itself; :func:`orc_elsewhere` runs the CLI under another parent, i.e. as another
holder.  Waiting processes are synchronised on what they print (a pty makes them print progress),
never on fixed sleeps.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    identity_env,
    lock_path,
    orc,
    orc_argv,
    orc_elsewhere,
    orc_json,
    wait_for,
)

from orc_git.context import Context
from orc_git.locking import leasefile
from orc_git.locking.info import LockInfo, parse_rfc3339

LOCK_KEYS = {"task_id", "locked", "stale", "stale_reason", "owner", "user", "host", "pid",
             "acquired_at", "heartbeat_at", "expires_at", "ttl", "token", "mine"}
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
ESC = "\x1b"


# -- helpers -------------------------------------------------------------------------------

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
    return leasefile.parse(lock_path(repo, task).read_bytes(), task)


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


# -- acquire -------------------------------------------------------------------------------

def test_acquire_json_shape_and_lease_belongs_to_the_caller(repo: Path) -> None:
    proc = orc("lock", "acquire", "TASK-AM-001", "--ttl", "30", "--json", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    out = one_json(proc)
    assert out["mode"] == "p2p"
    assert out["acquired"] is True
    assert "error" not in out
    lock = check_lock(out["lock"])
    assert lock["task_id"] == "TASK-AM-001"
    assert lock["locked"] is True and lock["stale"] is False and lock["mine"] is True
    assert lock["pid"] == os.getpid()  # the calling process, not the short-lived `orc`
    assert lock["user"] == "alice" and lock["owner"] == f"alice@{lock['host']}"
    assert lock["ttl"] == 30 and lock["token"] == 1
    beat, expires = parse_rfc3339(lock["heartbeat_at"]), parse_rfc3339(lock["expires_at"])
    assert beat is not None and expires == beat + 30
    disk = on_disk(repo, "TASK-AM-001")
    assert (disk.pid, disk.token, disk.ttl) == (os.getpid(), 1, 30)


def test_acquire_prints_the_token_on_stdout_and_narrates_on_stderr(repo: Path) -> None:
    proc = orc("lock", "acquire", "T", cwd=repo)
    assert proc.returncode == 0
    assert proc.stdout == "1\n"
    assert "acquired T" in proc.stderr


def test_second_acquire_from_the_same_parent_renews(repo: Path) -> None:
    first = hold_here(repo, "T")
    second = hold_here(repo, "T")
    assert second["token"] == first["token"] == 1
    assert second["acquired_at"] == first["acquired_at"]


def test_conflict_is_refused_with_the_holder_in_json(repo: Path) -> None:
    hold_here(repo, "T")
    before = lock_path(repo, "T").read_bytes()
    proc = orc_elsewhere("lock", "acquire", "T", "--json", cwd=repo)
    assert proc.returncode == 1
    out = one_json(proc)
    assert out["mode"] == "p2p"
    assert out["error"]["code"] == "LOCK_HELD"
    holder = check_lock(out["lock"])
    assert holder["locked"] is True and holder["pid"] == os.getpid()
    assert holder["user"] == "alice" and holder["token"] == 1
    assert lock_path(repo, "T").read_bytes() == before


def test_conflict_without_a_tty_never_prompts(repo: Path) -> None:
    hold_here(repo, "T")
    before = lock_path(repo, "T").read_bytes()
    # An answer waiting on stdin must not be taken as consent: stdin is not a terminal.
    proc = orc_elsewhere("lock", "acquire", "T", cwd=repo, input="2\n")
    assert proc.returncode == 1
    assert "Your choice" not in proc.stderr
    assert "alice" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert lock_path(repo, "T").read_bytes() == before


def test_acquire_timeout_on_a_held_lock_exits_124(repo: Path) -> None:
    hold_here(repo, "T")
    before = lock_path(repo, "T").read_bytes()
    started = time.monotonic()
    proc = orc_elsewhere("lock", "acquire", "T", "--timeout", "0.5", "--json", cwd=repo)
    elapsed = time.monotonic() - started
    assert proc.returncode == 124
    assert one_json(proc)["error"]["code"] == "TIMEOUT"
    assert 0.5 <= elapsed < 30
    assert lock_path(repo, "T").read_bytes() == before


def test_acquire_wait_succeeds_once_the_holder_releases(repo: Path) -> None:
    hold_here(repo, "T")
    with tty_orc("lock", "acquire", "T", "--wait", cwd=repo) as (proc, tty):
        tty.until("waiting for T")  # it found the lease held and is waiting
        release_here(repo, "T")
        assert proc.wait(30) == 0
        assert proc.stdout is not None
        assert proc.stdout.read().decode().strip() == "2"  # the next fencing token
    disk = on_disk(repo, "T")
    assert disk.token == 2 and disk.pid == proc.pid  # the wrapper: the acquirer's parent
    assert disk.stolen_from is None


def test_force_acquire_and_steal_record_stolen_and_status_shows_the_new_owner(
        repo: Path, tmp_path: Path) -> None:
    hold_here(repo, "T")
    bob = identity_env(tmp_path, "bob")
    proc = orc_elsewhere("lock", "steal", "T", "--json", cwd=repo, env=bob)
    assert proc.returncode == 0, proc.stderr
    out = one_json(proc)
    assert out["acquired"] is True
    lock = check_lock(out["lock"])
    assert lock["user"] == "bob" and lock["owner"].startswith("bob@") and lock["token"] == 2
    disk = on_disk(repo, "T")
    assert disk.stolen_from is not None and disk.stolen_from.startswith("alice@")
    assert disk.user == "bob"

    code, status = orc_json("lock", "status", "T", cwd=repo)
    assert code == 0
    now = check_lock(status["lock"])
    assert now["user"] == "bob" and now["token"] == 2 and now["mine"] is False
    human = orc("lock", "status", "T", cwd=repo)
    assert "Stolen from: alice@" in human.stdout

    # The former holder can neither renew nor release the thief's lease.
    proc = orc("lock", "heartbeat", "T", "--json", cwd=repo)
    assert proc.returncode == 1
    assert one_json(proc)["error"]["code"] == "NOT_OWNER"


def test_acquire_force_from_the_same_user_records_stolen(repo: Path) -> None:
    hold_here(repo, "T")
    proc = orc_elsewhere("lock", "acquire", "T", "--force", "--json", cwd=repo)
    assert proc.returncode == 0
    assert one_json(proc)["lock"]["token"] == 2
    assert on_disk(repo, "T").stolen_from is not None


# -- release and heartbeat -----------------------------------------------------------------

def test_release_by_a_non_owner_is_refused_unless_forced(repo: Path, tmp_path: Path) -> None:
    hold_here(repo, "T")
    bob = identity_env(tmp_path, "bob")
    proc = orc_elsewhere("lock", "release", "T", "--json", cwd=repo, env=bob)
    assert proc.returncode == 1
    out = one_json(proc)
    assert out["error"]["code"] == "NOT_OWNER"
    assert check_lock(out["lock"])["user"] == "alice"
    assert lock_path(repo, "T").exists()

    proc = orc_elsewhere("lock", "release", "T", "--force", "--json", cwd=repo, env=bob)
    assert proc.returncode == 0, proc.stderr
    out = one_json(proc)
    assert out["released"] is True
    assert check_lock(out["lock"])["user"] == "alice"  # what was released
    assert not lock_path(repo, "T").exists()


def test_the_same_user_may_release_from_another_process(repo: Path) -> None:
    hold_here(repo, "T")
    proc = orc_elsewhere("lock", "release", "T", "--json", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert one_json(proc)["released"] is True
    assert not lock_path(repo, "T").exists()


def test_release_of_a_free_task_says_so(repo: Path) -> None:
    code, out = orc_json("lock", "release", "T", cwd=repo)
    assert code == 0
    assert out["released"] is False
    assert check_lock(out["lock"])["locked"] is False


def test_heartbeat_renews_own_lease_and_refuses_others(repo: Path, tmp_path: Path) -> None:
    hold_here(repo, "T")
    before = os.stat(lock_path(repo, "T")).st_ino
    code, out = orc_json("lock", "heartbeat", "T", cwd=repo)
    assert code == 0
    assert check_lock(out["lock"])["token"] == 1
    assert os.stat(lock_path(repo, "T")).st_ino != before  # rewritten

    proc = orc_elsewhere("lock", "heartbeat", "T", "--json", cwd=repo,
                         env=identity_env(tmp_path, "bob"))
    assert proc.returncode == 1
    assert one_json(proc)["error"]["code"] == "NOT_OWNER"

    code, out = orc_json("lock", "heartbeat", "FREE", cwd=repo)
    assert code == 1
    assert out["error"]["code"] == "NOT_OWNER"


# -- status, list, wait, clean -------------------------------------------------------------

def test_status_of_a_free_and_a_held_task(repo: Path) -> None:
    code, out = orc_json("lock", "status", "T", cwd=repo)
    assert code == 0
    assert out["mode"] == "p2p"
    free = check_lock(out["lock"])
    assert free["task_id"] == "T" and free["locked"] is False
    assert orc("lock", "status", "T", cwd=repo).stdout == "T: not locked\n"

    hold_here(repo, "T")
    code, out = orc_json("lock", "status", "T", cwd=repo)
    held = check_lock(out["lock"])
    assert held["locked"] is True and held["mine"] is True and held["pid"] == os.getpid()
    text = orc("lock", "status", "T", cwd=repo).stdout
    assert "Locked by: Alice Martinez (alice@" in text
    assert "Started:" in text and "Last activity:" in text


def test_status_of_another_users_lease_is_not_mine(repo: Path, tmp_path: Path) -> None:
    hold_here(repo, "T")
    proc = orc("lock", "status", "T", "--json", cwd=repo, env=identity_env(tmp_path, "bob"))
    assert check_lock(one_json(proc)["lock"])["mine"] is False


def test_list_and_list_stale(repo: Path) -> None:
    code, out = orc_json("lock", "list", cwd=repo)
    assert (code, out["locks"]) == (0, [])

    hold_here(repo, "A-LIVE")
    proc = orc_elsewhere("lock", "acquire", "B-DEAD", cwd=repo)  # its holder exits at once
    assert proc.returncode == 0

    code, out = orc_json("lock", "list", cwd=repo)
    assert code == 0
    locks = [check_lock(lock) for lock in out["locks"]]
    assert [lock["task_id"] for lock in locks] == ["A-LIVE", "B-DEAD"]
    assert locks[0]["stale"] is False
    assert locks[1]["stale"] is True and locks[1]["stale_reason"] == "holder-dead"

    code, out = orc_json("lock", "list", "--stale", cwd=repo)
    assert code == 0
    assert [lock["task_id"] for lock in out["locks"]] == ["B-DEAD"]

    text = orc("lock", "list", cwd=repo).stdout.splitlines()
    assert len(text) == 2
    assert text[0].split("\t")[:2] == ["A-LIVE", "held"]
    assert text[1].split("\t")[:2] == ["B-DEAD", "stale:holder-dead"]


def test_wait_returns_promptly_after_the_holder_releases(repo: Path) -> None:
    hold_here(repo, "T")
    with tty_orc("lock", "wait", "T", cwd=repo, other_parent=False) as (proc, tty):
        tty.until("waiting for T")
        assert proc.poll() is None
        released = time.monotonic()
        release_here(repo, "T")
        assert proc.wait(30) == 0
        assert time.monotonic() - released < 5
        assert "T is free" in tty.rest()


def test_wait_json_free_stale_and_timeout(repo: Path) -> None:
    code, out = orc_json("lock", "wait", "T", "--timeout", "5", cwd=repo)
    assert code == 0
    assert check_lock(out["lock"])["locked"] is False

    assert orc_elsewhere("lock", "acquire", "DEAD", cwd=repo).returncode == 0
    code, out = orc_json("lock", "wait", "DEAD", "--timeout", "30", cwd=repo)
    assert code == 0
    assert check_lock(out["lock"])["stale_reason"] == "holder-dead"

    hold_here(repo, "T")
    started = time.monotonic()
    code, out = orc_json("lock", "wait", "T", "--timeout", "0.3", cwd=repo)
    assert code == 124
    assert out["error"]["code"] == "TIMEOUT"
    assert time.monotonic() - started >= 0.3


def test_clean_removes_the_lease_of_a_dead_holder(ctx: Context, repo: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        ctx.file_locker(pid=sleeper.pid).acquire("DEAD")
        hold_here(repo, "LIVE")
        code, out = orc_json("lock", "status", "DEAD", cwd=repo)
        assert out["lock"]["locked"] is True and out["lock"]["stale"] is False
        assert out["lock"]["pid"] == sleeper.pid
        code, out = orc_json("lock", "clean", cwd=repo)
        assert (code, out["removed"]) == (0, [])  # nothing stale yet
        assert lock_path(repo, "DEAD").exists()
    finally:
        sleeper.kill()
        sleeper.wait(10)

    code, out = orc_json("lock", "status", "DEAD", cwd=repo)
    assert out["lock"]["stale_reason"] == "holder-dead"
    code, out = orc_json("lock", "clean", cwd=repo)
    assert code == 0
    removed = [check_lock(lock) for lock in out["removed"]]
    assert [(r["task_id"], r["stale_reason"]) for r in removed] == [("DEAD", "holder-dead")]
    assert not lock_path(repo, "DEAD").exists()
    assert lock_path(repo, "LIVE").exists()
    code, out = orc_json("lock", "clean", cwd=repo)
    assert (code, out["removed"]) == (0, [])


def test_unreadable_lease_is_stale_and_can_be_cleaned(repo: Path) -> None:
    path = lock_path(repo, "BAD")
    path.parent.mkdir(parents=True)
    path.write_text("{{{ not a lease")
    code, out = orc_json("lock", "status", "BAD", cwd=repo)
    assert code == 0
    lock = check_lock(out["lock"])
    assert lock["locked"] is True and lock["stale_reason"] == "unreadable"
    code, out = orc_json("lock", "list", "--stale", cwd=repo)
    assert [lock["stale_reason"] for lock in out["locks"]] == ["unreadable"]
    code, out = orc_json("lock", "clean", cwd=repo)
    assert [lock["task_id"] for lock in out["removed"]] == ["BAD"]
    assert not path.exists()


def test_lease_not_renewed_within_its_ttl_is_expired_and_taken_over(repo: Path) -> None:
    # A holder on another machine (its pid cannot be judged here) that stopped renewing.
    path = lock_path(repo, "OLD")
    path.parent.mkdir(parents=True)
    remote = LockInfo("OLD", locked=True, owner="carol@elsewhere", user="carol",
                      host="elsewhere", pid=4242, pid_started=1.0, host_id="elsewhere/1/1",
                      acquired_at="2024-01-01T00:00:00Z", heartbeat_at="2024-01-01T00:00:00Z",
                      ttl=5, token=7)
    path.write_bytes(leasefile.render(remote))
    code, out = orc_json("lock", "status", "OLD", cwd=repo)
    assert out["lock"]["stale"] is False  # just written: the file's age is what counts
    old = time.time() - 60
    os.utime(path, (old, old))
    code, out = orc_json("lock", "status", "OLD", cwd=repo)
    assert code == 0
    assert check_lock(out["lock"])["stale_reason"] == "expired"
    assert out["lock"]["user"] == "carol"
    lock = hold_here(repo, "OLD")
    assert lock["token"] == 8  # fencing tokens keep increasing past the old holder's
    assert on_disk(repo, "OLD").stolen_from is None  # a takeover, not a theft


# -- lock run ------------------------------------------------------------------------------

def test_run_exits_with_the_command_status_and_releases(repo: Path) -> None:
    proc = orc("lock", "run", "T", "--", "sh", "-c", "exit 7", cwd=repo)
    assert proc.returncode == 7, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not lock_path(repo, "T").exists()
    _, out = orc_json("lock", "status", "T", cwd=repo)
    assert out["lock"]["locked"] is False
    assert hold_here(repo, "T")["token"] == 2  # `run` held token 1


def test_run_holds_the_lease_while_the_command_runs(repo: Path) -> None:
    script = f'echo "$PPID"; exec "{sys.executable}" -m orc_git lock status T --json'
    proc = orc("lock", "run", "T", "--", "sh", "-c", script, cwd=repo)
    assert proc.returncode == 0, proc.stderr
    ppid, status = proc.stdout.splitlines()
    lock = check_lock(json.loads(status)["lock"])
    assert lock["locked"] is True and lock["stale"] is False and lock["mine"] is True
    assert lock["pid"] == int(ppid)  # `orc lock run` itself holds it, not its caller
    assert not lock_path(repo, "T").exists()


def test_run_refuses_a_held_task_without_running_the_command(repo: Path,
                                                             tmp_path: Path) -> None:
    hold_here(repo, "T")
    marker = tmp_path / "ran"
    proc = orc_elsewhere("lock", "run", "T", "--", "touch", str(marker), cwd=repo)
    assert proc.returncode == 1
    assert not marker.exists()
    assert on_disk(repo, "T").pid == os.getpid()


SIGNAL_CHILD = r"""
import signal, sys
def handler(signum, frame):
    with open(sys.argv[1], "w") as fh:
        fh.write(signal.Signals(signum).name)
    sys.exit(5)
signal.signal(signal.SIGTERM, handler)
signal.signal(signal.SIGINT, handler)
print("ready", flush=True)
while True:
    signal.pause()
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_forwards_signals_and_exits_with_the_child_status(
        repo: Path, tmp_path: Path, sig: signal.Signals) -> None:
    flag = tmp_path / "signalled"
    with piped_orc("lock", "run", "T", "--", sys.executable, "-c", SIGNAL_CHILD, str(flag),
                   cwd=repo) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        FdReader(proc.stdout.fileno()).until("ready")
        wait_for(lambda: catches(proc.pid, signal.SIGTERM), timeout=10,
                 what="`orc lock run` to install its signal forwarding")
        assert lock_path(repo, "T").exists()
        proc.send_signal(sig)
        assert proc.wait(30) == 5
        assert "Traceback" not in proc.stderr.read().decode()
    assert flag.read_text() == sig.name
    assert not lock_path(repo, "T").exists()


def test_run_child_killed_by_a_forwarded_signal_exits_128_plus_signal(repo: Path) -> None:
    child = "import signal; print('ready', flush=True); signal.pause()"
    with piped_orc("lock", "run", "T", "--", sys.executable, "-c", child, cwd=repo) as proc:
        assert proc.stdout is not None
        FdReader(proc.stdout.fileno()).until("ready")
        wait_for(lambda: catches(proc.pid, signal.SIGTERM), timeout=10,
                 what="`orc lock run` to install its signal forwarding")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 128 + signal.SIGTERM
    assert not lock_path(repo, "T").exists()


def test_run_says_at_once_when_the_lease_is_lost(repo: Path) -> None:
    child = "import sys; print('ready', flush=True); sys.stdin.readline()"
    with piped_orc("lock", "run", "T", "--ttl", "3", "--", sys.executable, "-c", child,
                   cwd=repo) as proc:
        assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None
        FdReader(proc.stdout.fileno()).until("ready")
        stolen = orc_elsewhere("lock", "steal", "T", cwd=repo)
        assert stolen.returncode == 0, stolen.stderr
        # ttl 3: a heartbeat at least every second finds the lease gone
        FdReader(proc.stderr.fileno()).until("LEASE LOST", timeout=15)
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        assert proc.wait(30) == 0
    disk = on_disk(repo, "T")  # the thief's lease survives the run's end
    assert disk.token == 2 and disk.stolen_from is not None


def test_run_heartbeats_at_least_every_third_of_the_ttl(repo: Path) -> None:
    child = "import sys; print('ready', flush=True); sys.stdin.readline()"
    with piped_orc("lock", "run", "T", "--ttl", "3", "--", sys.executable, "-c", child,
                   cwd=repo) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        FdReader(proc.stdout.fileno()).until("ready")
        path = lock_path(repo, "T")
        seen = [os.stat(path).st_ino]
        stamps = []
        for _ in range(2):  # every heartbeat rewrites the lease (a new inode)
            wait_for(lambda: os.stat(path).st_ino != seen[-1], timeout=10, what="a heartbeat")
            seen.append(os.stat(path).st_ino)
            stamps.append(time.monotonic())
        assert stamps[1] - stamps[0] < 2.5  # ttl 3 => every second, never the default 10 s
        assert on_disk(repo, "T").ttl == 3
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        assert proc.wait(30) == 0
    assert not lock_path(repo, "T").exists()


def test_run_timeout_on_a_held_task_exits_124_without_running(repo: Path,
                                                             tmp_path: Path) -> None:
    hold_here(repo, "T")
    marker = tmp_path / "ran"
    proc = orc_elsewhere("lock", "run", "T", "--timeout", "0.3", "--", "touch", str(marker),
                         cwd=repo)
    assert proc.returncode == 124
    assert not marker.exists()
    assert "Traceback" not in proc.stderr


def test_run_of_a_missing_command_exits_127_without_traceback(repo: Path) -> None:
    proc = orc("lock", "run", "T", "--", "no-such-cmd-orc-test", cwd=repo)
    assert proc.returncode == 127
    assert "Traceback" not in proc.stderr
    assert "no-such-cmd-orc-test" in proc.stderr
    assert not lock_path(repo, "T").exists()


@pytest.mark.parametrize("tail", [(), ("--",)])
def test_run_without_a_command_is_a_usage_error(repo: Path, tail: tuple[str, ...]) -> None:
    proc = orc("lock", "run", "T", *tail, cwd=repo)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr
    assert not lock_path(repo, "T").exists()


# -- usage errors, interrupts, output hygiene ----------------------------------------------

USAGE_CASES = [
    (("lock",), "USAGE"),
    (("lock", "frob"), "USAGE"),
    (("lock", "acquire"), "USAGE"),
    (("lock", "release"), "USAGE"),
    (("lock", "status"), "USAGE"),
    (("lock", "acquire", "T", "--ttl", "abc"), "USAGE"),
    (("lock", "acquire", "T", "--ttl", "0"), "USAGE"),
    (("lock", "acquire", "T", "--ttl", "-5"), "USAGE"),
    (("lock", "acquire", "T", "--timeout", "-1"), "USAGE"),
    (("lock", "wait", "T", "--timeout", "soon"), "USAGE"),
    (("lock", "acquire", "../escape"), "INVALID_INPUT"),
    (("lock", "status", "a/b"), "INVALID_INPUT"),
    (("lock", "release", ".hidden"), "INVALID_INPUT"),
]


@pytest.mark.parametrize(("args", "code"), USAGE_CASES)
def test_usage_errors_exit_2_with_one_json_object(repo: Path, args: tuple[str, ...],
                                                  code: str) -> None:
    proc = orc(*args, "--json", cwd=repo)
    assert proc.returncode == 2
    out = one_json(proc)
    assert out["error"]["code"] == code
    assert list((repo / ".orc" / "tasks").iterdir()) == []  # nothing touched

    proc = orc(*args, cwd=repo)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr and "Traceback" not in proc.stderr


def test_outside_a_repository_is_a_usage_error(tmp_path: Path) -> None:
    elsewhere = tmp_path / "not-a-repo"
    elsewhere.mkdir()
    code, out = orc_json("lock", "status", "T", cwd=elsewhere)
    assert code == 2
    assert out["error"]["code"] == "NOT_A_REPOSITORY"


def test_interrupted_wait_exits_130(repo: Path) -> None:
    hold_here(repo, "T")
    before = lock_path(repo, "T").read_bytes()
    with tty_orc("lock", "acquire", "T", "--wait", cwd=repo) as (proc, tty):
        tty.until("waiting for T")
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: to the wrapper (a shell) and orc
        assert proc.wait(30) == 130
        text = tty.rest()
        assert "interrupted" in text and "Traceback" not in text
    with tty_orc("lock", "wait", "T", cwd=repo, other_parent=False) as (proc, tty):
        tty.until("waiting for T")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
        text = tty.rest()
        assert "interrupted" in text and "Traceback" not in text
    assert lock_path(repo, "T").read_bytes() == before


def test_no_ansi_escapes_without_a_tty(repo: Path) -> None:
    hold_here(repo, "T")
    runs = [orc("lock", "status", "T", cwd=repo), orc("lock", "list", cwd=repo),
            orc_elsewhere("lock", "acquire", "T", cwd=repo),
            orc("lock", "status", "../x", cwd=repo)]
    assert [r.returncode for r in runs] == [0, 0, 1, 2]
    for r in runs:
        assert ESC not in r.stdout and ESC not in r.stderr, (r.stdout, r.stderr)
        assert r.stdout or r.stderr


def test_colour_on_a_tty_unless_no_color(repo: Path) -> None:
    with tty_orc("lock", "status", "../x", cwd=repo) as (proc, tty):
        assert proc.wait(30) == 2
        assert f"{ESC}[" in tty.rest()  # colour on a terminal…
    with tty_orc("lock", "status", "../x", cwd=repo, env={"NO_COLOR": "1"}) as (proc, tty):
        assert proc.wait(30) == 2
        text = tty.rest()
        assert "invalid task id" in text and ESC not in text  # …never with NO_COLOR


def test_solo_mode_acquires_and_writes_nothing(solo_repo: Path) -> None:
    proc = orc("lock", "acquire", "T", "--json", cwd=solo_repo)
    assert proc.returncode == 0
    out = one_json(proc)
    assert out["mode"] == "solo" and out["acquired"] is True
    check_lock(out["lock"])
    for args in (("lock", "heartbeat", "T"), ("lock", "status", "T"), ("lock", "list"),
                 ("lock", "wait", "T"), ("lock", "steal", "T"), ("lock", "clean"),
                 ("lock", "release", "T")):
        code, out = orc_json(*args, cwd=solo_repo)
        assert code == 0, (args, out)
        assert out["mode"] == "solo"
    assert orc_elsewhere("lock", "acquire", "T", cwd=solo_repo).returncode == 0
    assert orc("lock", "run", "T", "--", "sh", "-c", "exit 7", cwd=solo_repo).returncode == 7
    assert not (solo_repo / ".orc").exists()


# -- the conflict prompt on a terminal -----------------------------------------------------

PROMPT = "Your choice [1/2/3]:"


def _check_prompt(text: str) -> None:
    assert "Task T is currently locked" in text
    assert "Locked by: Alice Martinez (alice@" in text
    assert f"pid {os.getpid()}" in text
    assert "Started:" in text and "Last activity:" in text
    assert "1. Wait" in text and "2. Force unlock" in text and "3. Cancel" in text


def test_tty_conflict_prompt_cancel_changes_nothing(repo: Path) -> None:
    hold_here(repo, "T")
    before = lock_path(repo, "T").read_bytes()
    with tty_orc("lock", "acquire", "T", cwd=repo, env={"NO_COLOR": "1"}) as (proc, tty):
        text = tty.until(PROMPT)
        _check_prompt(text)
        assert ESC not in text
        os.write(tty.fd, b"x\n")  # not an option: asked again
        tty.until(PROMPT, count=2)
        os.write(tty.fd, b"3\n")
        assert proc.wait(30) == 1
        assert proc.stdout is not None and proc.stdout.read() == b""
    assert lock_path(repo, "T").read_bytes() == before


def test_tty_conflict_prompt_end_of_input_cancels(repo: Path) -> None:
    hold_here(repo, "T")
    before = lock_path(repo, "T").read_bytes()
    with tty_orc("lock", "acquire", "T", cwd=repo) as (proc, tty):
        tty.until(PROMPT)
        os.write(tty.fd, b"\x04")  # Ctrl-D
        assert proc.wait(30) == 1
    assert lock_path(repo, "T").read_bytes() == before


def test_tty_conflict_prompt_force_steals(repo: Path) -> None:
    hold_here(repo, "T")
    with tty_orc("lock", "acquire", "T", cwd=repo) as (proc, tty):
        text = tty.until(PROMPT)
        _check_prompt(text)
        assert f"{ESC}[1;31m" in text  # colour on a terminal
        os.write(tty.fd, b"2\n")
        assert proc.wait(30) == 0
        assert proc.stdout is not None
        assert proc.stdout.read().decode().strip() == "2"
    disk = on_disk(repo, "T")
    assert disk.pid == proc.pid and disk.token == 2
    assert disk.stolen_from is not None and disk.stolen_from.startswith("alice@")


def test_tty_conflict_prompt_wait_acquires_after_release(repo: Path) -> None:
    hold_here(repo, "T")
    with tty_orc("lock", "acquire", "T", cwd=repo) as (proc, tty):
        tty.until(PROMPT)
        os.write(tty.fd, b"1\n")
        tty.until("waiting for T")
        assert proc.poll() is None
        release_here(repo, "T")
        assert proc.wait(30) == 0
    disk = on_disk(repo, "T")
    assert disk.pid == proc.pid and disk.token == 2 and disk.stolen_from is None


def test_tty_with_json_never_prompts(repo: Path) -> None:
    hold_here(repo, "T")
    with tty_orc("lock", "acquire", "T", "--json", cwd=repo) as (proc, tty):
        assert proc.wait(30) == 1
        assert "Your choice" not in tty.rest()
        assert proc.stdout is not None
        lines = proc.stdout.read().decode().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["error"]["code"] == "LOCK_HELD"
    assert check_lock(out["lock"])["pid"] == os.getpid()
