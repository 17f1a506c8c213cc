"""When a p2p lease is stale, and why: the one place these rules live.

A lease is stale when it is unreadable; when its holder process is gone, judged only on the same
machine and PID namespace (the host id) by PID and process start time, so a reused PID is not the
holder; or when it was last rewritten more than ``ttl`` seconds ago *by the filesystem's own
clock*: the file's mtime against the mtime of a probe file created beside it now, so a skewed
clock on another machine sharing the directory cannot make a live lease look stale.  Timestamps
inside the file are for people and decide nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from orc_git.identity import process_alive
from orc_git.locking import lockio
from orc_git.locking.info import LockInfo


def judge(info: LockInfo, my_host_id: str, now: Callable[[], float]) -> LockInfo:
    """Set ``stale`` and ``stale_reason`` on ``info`` (and return it)."""
    if info.stale_reason == "unreadable":
        return info
    reason = None
    same_host = info.host_id == my_host_id and info.pid is not None
    if same_host and not process_alive(info.pid or 0, info.pid_started or 0.0):
        reason = "holder-dead"
    elif info.mtime is not None and info.ttl is not None and now() - info.mtime > info.ttl:
        reason = "expired"
    info.stale = reason is not None
    info.stale_reason = reason
    return info


def fs_clock(root: str) -> Callable[[], float]:
    """The filesystem's time, probed at most once per operation and only if a lease needs it."""
    return functools.cache(lambda: lockio.fs_now(root))
