"""Waiting for a lease to end, promptly: a cheap poll of the lease every 50 ms, and a full
judgement (holder alive? expired?) every quarter second, so a release wakes a waiter within about
50 ms and a ``kill -9`` of the holder within about 250 ms."""

from __future__ import annotations

import time
from collections.abc import Callable

from orc_git.locking.base import Locker
from orc_git.locking.info import LockInfo

POLL = 0.05
JUDGE_EVERY = 0.25


def wait_free(locker: Locker, task_id: str, deadline: float | None,
              progress: Callable[[LockInfo, float], None] | None = None) -> bool:
    """True once ``task_id`` is free or stale, False when ``deadline`` (monotonic) passes."""
    started = time.monotonic()
    peek = getattr(locker, "peek", None)
    last_seen: object = None
    next_judge = 0.0
    while True:
        now = time.monotonic()
        seen = peek(task_id) if peek is not None else None
        if seen is None or seen != last_seen or now >= next_judge:
            info = locker.is_locked(task_id)
            if not info.locked or info.stale:
                return True
            if progress is not None:
                progress(info, now - started)
            last_seen = seen
            next_judge = now + JUDGE_EVERY
        if deadline is not None and now >= deadline:
            return False
        pause = POLL if deadline is None else max(0.0, min(POLL, deadline - now))
        time.sleep(pause)
