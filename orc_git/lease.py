"""The executor's API: hold a task's lock for the length of a ``with`` block.

    with orc_git.hold("TASK-001", wait=True, timeout=30) as lease:
        run(task, fencing_token=lease.token)
        lease.check()          # raises LeaseLost if the lease was taken over meanwhile

While the block runs, the process-wide heartbeat thread renews the lease.  If the lease is lost
(taken over after this process stalled, stolen, removed) or cannot be renewed (disk full,
read-only), the holder is told at once: ``on_lost(lease, error)`` is called from the heartbeat
thread, a log line is written, and for a real loss ``lease.lost`` is set and ``lease.check()``
raises.  The holder is this process; a second ``hold`` of the same task in the same process is
refused, like any other holder.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from orc_git.context import default_context
from orc_git.errors import Behind, LeaseLost, LockHeld, OrcError, TimedOut
from orc_git.handover import behind_message
from orc_git.locking.heartbeat import shared_heartbeater
from orc_git.locking.wait import wait_free

if TYPE_CHECKING:
    from orc_git.context import Context
    from orc_git.handover import Head
    from orc_git.locking.base import Locker
    from orc_git.locking.info import LockInfo

log = logging.getLogger("orc_git.lease")

LostCallback = Callable[["Lease", OrcError], None]


class Lease:
    def __init__(self, locker: Locker, info: LockInfo, interval: float,
                 on_lost: LostCallback | None = None) -> None:
        self.locker = locker
        self.info = info
        self.task_id = info.task_id
        self.interval = interval
        self.on_lost = on_lost
        self.lost = False  # set by the heartbeat thread; a plain flag, read without a lock
        self.error: OrcError | None = None
        self.released = False
        self.behind: Head | None = None
        """The head the last holder left that this checkout lacked at acquire, if any."""

    @property
    def token(self) -> int | None:
        return self.info.token

    @property
    def domain(self) -> str | None:
        """The lock domain ``token`` counts in (this clone, or the team server that granted it):
        :func:`orc_git.set_state` records it beside the token.  It follows ``info``, which a
        team lease's fallback to the file lease changes."""
        return self.info.lock_domain

    def __hash__(self) -> int:
        return id(self)

    def beat(self) -> None:
        """Renew once; called by the heartbeat thread. Reports trouble instead of raising."""
        if self.released or self.lost:
            return
        try:
            self.info = self.locker.heartbeat(self.task_id)
        except LeaseLost as exc:
            if self.released:
                return
            self.lost = True
            shared_heartbeater().remove(self)
            self._tell(exc, logging.ERROR)
        except OrcError as exc:
            self._tell(exc, logging.WARNING)
        except Exception as exc:  # a locker bug must still reach the holder
            self._tell(OrcError(f"{self.task_id}: heartbeat failed: {exc!r}"), logging.ERROR)
        else:
            self.error = None

    def _tell(self, exc: OrcError, level: int) -> None:
        self.error = exc
        what = "LEASE LOST" if self.lost else "lease not renewed"
        log.log(level, "%s: %s", what, exc.message)
        if self.on_lost is not None:
            try:
                self.on_lost(self, exc)
            except Exception:
                log.exception("%s: the on_lost callback failed", self.task_id)

    def check(self) -> None:
        """Raise :class:`LeaseLost` if the lease is known to be lost."""
        if self.lost:
            assert self.error is not None
            raise LeaseLost(self.error.message)

    def release(self) -> bool:
        if self.released:
            return False
        self.released = True
        shared_heartbeater().remove(self)
        if self.lost:
            return False
        return self.locker.release(self.task_id)


def acquire_waiting(locker: Locker, task_id: str, *, ttl: int | None, wait: bool,
                    timeout: float | None, force: bool = False,
                    progress: Callable[[LockInfo, float], None] | None = None) -> LockInfo:
    """Acquire, or with ``wait`` retry until the lease is released or goes stale."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            return locker.acquire(task_id, ttl=ttl, force=force)
        except LockHeld as exc:
            if not wait:
                raise
            holder = exc.lock
        if holder is None:  # busy mid-update, holder unknown: look again shortly
            if deadline is not None and time.monotonic() >= deadline:
                raise TimedOut(f"timed out waiting for {task_id}")
            time.sleep(0.05)
            continue
        if not wait_free(locker, task_id, deadline, progress):
            raise TimedOut(f"timed out waiting for {task_id} (held by {holder.who()})")


class Holding:
    """What :func:`hold` returns: a context manager that acquires on entry and releases on exit.
    A class rather than ``@contextmanager``: this is the lease fast path, where the generator
    machinery is a measurable share of a cycle (``docs/benchmarks.md``)."""

    __slots__ = ("_context", "_latest", "_lease", "_on_lost", "_repo", "_task_id", "_timeout",
                 "_ttl", "_wait")

    def __init__(self, task_id: str, wait: bool, timeout: float | None, ttl: int | None,
                 on_lost: LostCallback | None, repo: str | os.PathLike[str] | None,
                 context: Context | None, require_latest: bool | None = None) -> None:
        self._task_id, self._wait, self._timeout, self._ttl = task_id, wait, timeout, ttl
        self._on_lost, self._repo, self._context = on_lost, repo, context
        self._latest = require_latest
        self._lease: Lease | None = None

    def __enter__(self) -> Lease:
        ctx = self._context or default_context(self._repo)
        locker = ctx.locker()
        ttl = ctx.ttl if self._ttl is None else self._ttl
        info = acquire_waiting(locker, self._task_id, ttl=ttl, wait=self._wait,
                               timeout=self._timeout)
        lease = Lease(locker, info, ctx.heartbeat_interval(ttl), self._on_lost)
        if info.last_head is not None:
            lease.behind = behind = ctx.handover.behind(info.last_head)
            if behind is not None:
                message = behind_message(self._task_id, behind)
                latest = ctx.config.require_latest if self._latest is None else self._latest
                if latest:
                    lease.release()
                    raise Behind(f"{message}; refused (the latest is required)", behind)
                log.warning("%s", message)
        self._lease = lease
        if ctx.mode != "solo":
            shared_heartbeater().add(lease)
        return lease

    def __exit__(self, *exc_info: object) -> None:
        if self._lease is not None:
            self._lease.release()


def hold(task_id: str, *, wait: bool = False, timeout: float | None = None,
         ttl: int | None = None, on_lost: LostCallback | None = None,
         repo: str | os.PathLike[str] | None = None,
         context: Context | None = None, require_latest: bool | None = None) -> Holding:
    """Hold ``task_id``'s lock for the length of a ``with`` block (see the module docstring).
    When the last holder left commits this checkout lacks, a warning is logged and
    ``lease.behind`` says what they left; with ``require_latest`` (default: the config's
    ``lock.require_latest``) :class:`~orc_git.errors.Behind` is raised instead."""
    return Holding(task_id, wait, timeout, ttl, on_lost, repo, context, require_latest)
