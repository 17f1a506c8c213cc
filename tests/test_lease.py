"""The executor API: ``orc_git.hold``, its heartbeat, and how the holder hears of trouble."""

from __future__ import annotations

import errno
import queue
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HolderProcess, leased, lock_path, wait_for

import orc_git
from orc_git.context import Context
from orc_git.errors import LeaseLost, LockHeld, OrcError, StorageError, TimedOut
from orc_git.lease import Lease, acquire_waiting
from orc_git.locking import lockyaml


def _problems() -> tuple[queue.Queue[OrcError], orc_git.lease.LostCallback]:
    q: queue.Queue[OrcError] = queue.Queue()
    return q, lambda lease, error: q.put(error)


def test_hold_acquires_heartbeats_and_releases(repo: Path) -> None:
    path = lock_path(repo, "T")
    with orc_git.hold("T", repo=repo, ttl=3) as lease:
        assert lease.token == 1
        first = path.stat().st_mtime_ns
        wait_for(lambda: path.stat().st_mtime_ns != first, timeout=10, what="a heartbeat")
        assert lockyaml.parse(path.read_bytes(), "T").token == 1
        lease.check()
    assert not leased(repo, "T")


def test_second_hold_in_same_process_is_refused(repo: Path) -> None:
    with orc_git.hold("T", repo=repo), pytest.raises(LockHeld), orc_git.hold("T", repo=repo):
        pass


def test_holder_is_told_at_once_when_lease_is_taken(repo: Path) -> None:
    problems, on_lost = _problems()
    path = lock_path(repo, "T")
    with orc_git.hold("T", repo=repo, ttl=3, on_lost=on_lost) as lease:
        successor = lockyaml.parse(path.read_bytes(), "T").with_(token=99, pid=1)
        path.write_bytes(lockyaml.render(successor))
        error = problems.get(timeout=10)
        assert isinstance(error, LeaseLost) and "token 99" in error.message
        assert lease.lost
        with pytest.raises(LeaseLost):
            lease.check()
    assert lockyaml.parse(path.read_bytes(), "T").token == 99  # exit did not touch it


def test_wait_wakes_when_holder_releases(ctx: Context, repo: Path,
                                         holders: list[HolderProcess]) -> None:
    holder = HolderProcess(repo, "T")
    holders.append(holder)
    seen = []

    def progress(info: object, waited: float) -> None:
        if not seen:
            holder.tell("release")
        seen.append(waited)

    info = acquire_waiting(ctx.locker(), "T", ttl=None, wait=True, timeout=30,
                           progress=progress)
    assert seen and info.token == holder.token + 1
    ctx.locker().release("T")


def test_wait_times_out(repo: Path, holders: list[HolderProcess]) -> None:
    holders.append(HolderProcess(repo, "T"))
    with pytest.raises(TimedOut, match="held by Alice Martinez"), \
            orc_git.hold("T", repo=repo, wait=True, timeout=0.2):
        pass


@pytest.fixture
def tmpfs_lock_root(repo: Path) -> Iterator[Path]:
    """The lease directory on a tiny tmpfs we can fill up or make read-only."""
    root = repo / ".orc" / "tasks"
    root.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(root)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def _fill(path: Path) -> None:
    with open(path, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def _recovers(lease: Lease) -> bool:
    return lease.error is None


def test_full_disk_during_heartbeat_tells_holder(repo: Path, tmpfs_lock_root: Path) -> None:
    problems, on_lost = _problems()
    with orc_git.hold("T", repo=repo, ttl=3, on_lost=on_lost) as lease:
        _fill(tmpfs_lock_root / "filler")
        error = problems.get(timeout=10)
        assert isinstance(error, StorageError) and "No space left" in error.message
        assert not lease.lost
        (tmpfs_lock_root / "filler").unlink()
        wait_for(lambda: _recovers(lease), timeout=10, what="a heartbeat after space returns")
        lease.check()
    assert not leased(repo, "T")


def test_read_only_lock_dir_during_heartbeat_tells_holder(repo: Path) -> None:
    """``chattr +i`` makes the task directory unwritable even for root (tests run as root)."""
    problems, on_lost = _problems()
    task_dir = lock_path(repo, "T").parent
    with orc_git.hold("T", repo=repo, ttl=3, on_lost=on_lost) as lease:
        frozen = subprocess.run(["chattr", "+i", str(task_dir)], capture_output=True)
        if frozen.returncode != 0:
            pytest.skip(f"cannot make a directory immutable here: {frozen.stderr!r}")
        try:
            error = problems.get(timeout=10)
        finally:
            subprocess.run(["chattr", "-i", str(task_dir)], check=True)
        assert isinstance(error, StorageError) and "Operation not permitted" in error.message
        assert not lease.lost
        wait_for(lambda: _recovers(lease), timeout=10, what="a heartbeat once writable")
    assert not leased(repo, "T")


def test_acquire_on_full_disk_is_a_clear_error(ctx: Context, tmpfs_lock_root: Path) -> None:
    _fill(tmpfs_lock_root / "filler")
    with pytest.raises(StorageError, match="No space left"):
        ctx.locker().acquire("T")
    assert not (tmpfs_lock_root / "T" / "lock.yaml").exists()
