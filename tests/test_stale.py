"""orc_git.locking.stale: a lease is stale when unreadable, when its holder is gone (same host
only), or when the filesystem's clock says it was not renewed within its TTL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import dead_pid

from orc_git.identity import process_start_time
from orc_git.locking import stale
from orc_git.locking.info import LockInfo

HOST = "box/1/2"


def lease(pid: int, started: float, host_id: str = HOST, mtime: float = 1000.0,
          ttl: int = 60) -> LockInfo:
    return LockInfo("T", locked=True, pid=pid, pid_started=started, host_id=host_id,
                    mtime=mtime, ttl=ttl)


def now(at: float = 1010.0):  # type: ignore[no-untyped-def]
    return lambda: at


def test_a_live_holder_within_its_ttl_is_not_stale() -> None:
    me = os.getpid()
    info = stale.judge(lease(me, process_start_time(me) or 0.0), HOST, now())
    assert (info.stale, info.stale_reason) == (False, None)


def test_a_dead_holder_on_this_host_is_stale_at_once() -> None:
    info = stale.judge(lease(dead_pid(), 1.0), HOST, now())
    assert (info.stale, info.stale_reason) == (True, "holder-dead")


def test_a_reused_pid_is_not_the_holder() -> None:
    with subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE) as child:
        started = process_start_time(child.pid) or 0.0
        assert stale.judge(lease(child.pid, started), HOST, now()).stale is False
        info = stale.judge(lease(child.pid, started - 60), HOST, now())
        assert info.stale_reason == "holder-dead"
        child.communicate(b"\n")


def test_another_host_is_judged_by_the_clock_alone() -> None:
    gone = dead_pid()
    assert stale.judge(lease(gone, 1.0, host_id="other/1/2"), HOST, now(1059.0)).stale is False
    info = stale.judge(lease(gone, 1.0, host_id="other/1/2"), HOST, now(1061.0))
    assert info.stale_reason == "expired"


def test_an_unreadable_lease_stays_unreadable() -> None:
    info = LockInfo("T", locked=True, stale=True, stale_reason="unreadable")
    assert stale.judge(info, HOST, now()).stale_reason == "unreadable"


def test_the_fs_clock_is_probed_once_and_only_when_asked(tmp_path: Path) -> None:
    clock = stale.fs_clock(str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # nothing probed yet
    first = clock()
    (tmp_path / "later").write_text("x")
    assert clock() == first  # cached for the operation
    assert abs(first - (tmp_path / "later").stat().st_mtime) < 60
    assert [p.name for p in tmp_path.iterdir()] == ["later"]  # the probe file is gone
