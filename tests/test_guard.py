"""orc_git.locking.guard: the per-task flock that serialises lease changes, and its tokens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orc_git.errors import GuardBusy, StorageError, UnsafePath
from orc_git.locking.guard import FENCE_NAME, Guards, next_token

HOLD_GUARD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def test_tokens_strictly_increase_and_survive_a_new_process(tmp_path: Path) -> None:
    guards = Guards(str(tmp_path))
    with guards.held("T") as fd:
        tokens = [next_token(fd), next_token(fd), next_token(fd, at_least=10)]
    assert tokens == [1, 2, 11]
    with Guards(str(tmp_path)).held("T") as fd:
        assert next_token(fd) == 12
    assert (tmp_path / "T" / FENCE_NAME).stat().st_size == 12


def test_another_process_holding_the_guard_makes_us_wait_then_give_up(tmp_path: Path) -> None:
    guards = Guards(str(tmp_path))
    fd = guards.take("T")
    assert fd is not None
    with subprocess.Popen([sys.executable, "-c", HOLD_GUARD, str(tmp_path / "T" / FENCE_NAME)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as other:
        assert other.stdout is not None and other.stdout.readline() == "held\n"
        with pytest.raises(GuardBusy, match="another process has been updating this lease"):
            Guards.lock(fd, "T", timeout=0.2)
        other.communicate("")
    Guards.lock(fd, "T", timeout=30)  # free once the other process is gone
    guards.give_back("T", fd)


def test_a_descriptor_is_reused_but_never_shared(tmp_path: Path) -> None:
    guards = Guards(str(tmp_path))
    first = guards.take("T")
    second = guards.take("T")  # in use: a second, separate descriptor
    assert first is not None and second is not None and first != second
    guards.give_back("T", first)
    guards.give_back("T", second)  # the cache keeps one per task
    assert guards.take("T") == first
    with pytest.raises(OSError):
        os.fstat(second)


def test_absent_without_create_and_unsafe_fences_are_refused(tmp_path: Path) -> None:
    guards = Guards(str(tmp_path))
    assert guards.take("T", create=False) is None
    assert not (tmp_path / "T").exists()
    (tmp_path / "F").mkdir()
    os.mkfifo(tmp_path / "F" / FENCE_NAME)
    with pytest.raises(UnsafePath, match="not a regular file"):
        guards.take("F")
    (tmp_path / "L").mkdir()
    (tmp_path / "L" / FENCE_NAME).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StorageError, match="symbolic link"):
        guards.take("L")
    assert not (tmp_path / "elsewhere").exists()
    (tmp_path / "D").symlink_to(tmp_path / "F", target_is_directory=True)
    with pytest.raises(UnsafePath, match="symbolic link"):
        guards.task_dir("D")
