"""Who may release or renew a lease (issue 11, point 3), and where read answers come from in
p2p and solo (point 1): real ``orc`` processes, real lease files."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    HolderProcess,
    end_process,
    identity_env,
    leased,
    lock_path,
    orc,
    orc_elsewhere,
    orc_json,
    wait_for,
)
from lockcli import check_lock, hold_here, on_disk, one_json

from orc_git.locking import lockyaml
from orc_git.locking.info import parse_rfc3339

WAITER = "import sys; sys.stdin.read()"  # a command that runs until its stdin closes


def _written(repo: Path, task: str) -> bool:
    """A whole lease on disk (not one caught half written)."""
    try:
        return leased(repo, task) and on_disk(repo, task).pid is not None
    except lockyaml.Unreadable:
        return False


@pytest.fixture
def lock_run(repo: Path) -> Iterator[subprocess.Popen[str]]:
    """``orc lock run T -- python -c WAITER``: a live process holding T itself."""
    proc = subprocess.Popen([sys.executable, "-m", "orc_git", "lock", "run", "T", "--",
                             sys.executable, "-c", WAITER], cwd=repo, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: _written(repo, "T") or proc.poll() is not None, what="the lease")
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    yield proc
    end_process(proc)


def test_a_lock_run_lease_is_released_by_another_shell_only_with_force(
        repo: Path, lock_run: subprocess.Popen[str]) -> None:
    assert on_disk(repo, "T").held_by == "process"
    proc = orc_elsewhere("lock", "release", "T", "--json", cwd=repo)  # same user, other shell
    assert proc.returncode == 1, proc.stderr
    out = one_json(proc)
    assert out["error"]["code"] == "NOT_OWNER"
    assert "running process" in out["error"]["message"] and "--force" in out["error"]["message"]
    assert check_lock(out["lock"])["pid"] == lock_run.pid and leased(repo, "T")
    proc = orc_elsewhere("lock", "heartbeat", "T", "--json", cwd=repo)
    assert proc.returncode == 1 and one_json(proc)["error"]["code"] == "NOT_OWNER"

    proc = orc_elsewhere("lock", "release", "T", "--force", "--json", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert one_json(proc)["released"] is True and not leased(repo, "T")


def test_a_hold_lease_of_a_dead_process_may_be_released_by_its_user(
        repo: Path, lock_run: subprocess.Popen[str]) -> None:
    lock_run.kill()
    lock_run.wait(10)
    proc = orc_elsewhere("lock", "release", "T", "--json", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    out = one_json(proc)
    assert out["released"] is True and out["was_stale"] == "holder-dead"
    assert "holder process had ended" in proc.stderr


def test_an_acquire_lease_keeps_the_same_user_rule(repo: Path) -> None:
    hold_here(repo, "T")
    assert on_disk(repo, "T").held_by == "shell"
    proc = orc_elsewhere("lock", "release", "T", "--json", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert one_json(proc)["released"] is True and not leased(repo, "T")


def test_an_older_lease_without_held_by_reads_and_keeps_the_same_user_rule(repo: Path) -> None:
    hold_here(repo, "T")
    path = lock_path(repo, "T")
    path.write_bytes(b"".join(line for line in path.read_bytes().splitlines(keepends=True)
                              if not line.startswith(b"held_by:")))
    assert on_disk(repo, "T").held_by is None
    code, out = orc_json("lock", "status", "T", cwd=repo)
    assert code == 0 and check_lock(out["lock"])["user"] == "alice"
    proc = orc_elsewhere("lock", "release", "T", "--json", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert not leased(repo, "T")


def test_another_user_from_the_same_parent_is_another_holder(repo: Path,
                                                            tmp_path: Path) -> None:
    alice = hold_here(repo, "T")  # held for this test process
    bob = identity_env(tmp_path, "bob")
    for args in (("release", "T"), ("heartbeat", "T")):
        proc = orc("lock", *args, "--json", cwd=repo, env=bob)  # bob, same parent process
        assert proc.returncode == 1, (args, proc.stderr)
        assert one_json(proc)["error"]["code"] == "NOT_OWNER"
    proc = orc("lock", "acquire", "T", "--json", cwd=repo, env=bob)
    assert proc.returncode == 1 and one_json(proc)["error"]["code"] == "LOCK_HELD"
    now = on_disk(repo, "T")
    assert leased(repo, "T") and now.user == "alice" and now.token == alice["token"]


def _expire(repo: Path, task: str) -> None:
    """The lease last rewritten two TTLs ago: what the filesystem's clock judges."""
    old = time.time() - 2 * (on_disk(repo, task).ttl or 60)
    os.utime(lock_path(repo, task), (old, old))


def test_heartbeat_of_an_expired_lease_says_so(repo: Path) -> None:
    token = hold_here(repo, "T", "--ttl", "5")["token"]
    _expire(repo, "T")
    proc = orc("lock", "heartbeat", "T", "--json", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    out = one_json(proc)
    assert out["was_stale"] == "expired" and check_lock(out["lock"])["token"] == token
    assert "had expired" in proc.stderr and f"token {token} is still yours" in proc.stderr
    code, out = orc_json("lock", "heartbeat", "T", cwd=repo)  # fresh now: nothing to say
    assert code == 0 and out["was_stale"] is None


def test_release_of_an_expired_lease_says_so(repo: Path) -> None:
    hold_here(repo, "T", "--ttl", "5")
    _expire(repo, "T")
    proc = orc("lock", "release", "T", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert "had expired at" in proc.stderr and "released" in proc.stderr
    assert not leased(repo, "T")


def test_p2p_and_solo_answers_name_their_source(repo: Path, solo_repo: Path) -> None:
    for args in (("status", "T"), ("list",), ("wait", "T")):
        code, out = orc_json("lock", *args, cwd=repo)
        assert code == 0 and out["source"] == "file" and out["warnings"] == [], (args, out)
        code, out = orc_json("lock", *args, cwd=solo_repo)
        assert code == 0 and out["source"] == "none", (args, out)
    code, out = orc_json("lock", "acquire", "T", cwd=repo)
    assert code == 0 and out["source"] == "file"
    assert lockyaml.parse(lock_path(repo, "T").read_bytes(), "T").held_by == "shell"


def test_a_holder_that_renews_after_its_lease_expired_says_so(repo: Path,
                                                              holders: list[HolderProcess]
                                                              ) -> None:
    """``hold()``'s heartbeat thread, stopped past its TTL, renews the lease nobody took; its
    log says the lease had expired and the token is still its own."""
    holder = HolderProcess(repo, "T", ttl=2)
    holders.append(holder)
    os.kill(holder.pid, signal.SIGSTOP)
    try:
        def overdue() -> bool:
            _, out = orc_json("lock", "status", "T", cwd=repo)
            stamp = parse_rfc3339(out["lock"]["heartbeat_at"] or "") or 0.0
            return out["lock"]["stale_reason"] == "expired" and time.time() > stamp + 3.5

        wait_for(overdue, what="the stopped holder's lease to expire")
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    err = holder.proc.stderr
    assert err is not None
    seen = ""
    deadline = time.monotonic() + 30
    while "had expired" not in seen:
        left = deadline - time.monotonic()
        assert left > 0, seen
        if select.select([err], [], [], left)[0]:
            seen += err.readline()
    assert f"token {holder.token} is still this holder's" in seen
    _, out = orc_json("lock", "status", "T", cwd=repo)
    assert out["lock"]["stale"] is False and out["lock"]["token"] == holder.token
