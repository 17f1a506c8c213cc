"""A clone's p2p lock files as any process sees them: read without a lock, judged live or stale,
cleaned, and renewed or released on behalf of their holder (``orc lock heartbeat``/``release``
from a new process act for the shell that took the lease).

The leases this process grants itself (the fast path) are the business of its subclass
:class:`orc_git.locking.filelocker.FileLocker`, the p2p locker.  Staleness is judged by
:mod:`orc_git.locking.stale`; the files are read and written by :mod:`orc_git.locking.lockio`.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from orc_git.errors import LockHeld, NotOwner, StorageError, UnsafePath
from orc_git.identity import Holder
from orc_git.locking import domain, lockio, lockyaml, stale
from orc_git.locking.guard import Guards
from orc_git.locking.info import Answer, LockInfo, rfc3339
from orc_git.safefs import real_dir_problem
from orc_git.taskid import check_task_id

if TYPE_CHECKING:
    from orc_git.handover import Handover, Head


def warn(message: str, *args: object) -> None:
    """Log lines are rare (takeovers, losses): ``logging`` is imported only when one is due,
    which keeps it off the git hooks' path."""
    import logging

    logging.getLogger("orc_git.lock").warning(message, *args)


EventSink = Callable[[str, str, LockInfo | None, LockInfo | None, str], None]


def _check_root(root: str) -> None:
    """Once per locker, not per acquire: the lease directory must be a real directory (or not
    exist yet), never a link out of the repository; with it real, every lease path below it is
    a task directory (refused when it is a link, :meth:`Guards.task_dir`) and a file opened
    ``O_NOFOLLOW``."""
    why = real_dir_problem(root)
    if why is not None:
        raise UnsafePath(f"{root}: {why}; refusing to keep leases there")


class FileLockStore:
    name = "file"
    answer = Answer("file")

    def __init__(self, root: Path, holder: Holder, *, ttl: int = 60,
                 events: EventSink | None = None, mode: str = "p2p",
                 user_owns: bool = False, domain_dir: Path | None = None,
                 handover: Handover | None = None) -> None:
        """``user_owns``: leases this locker did not grant itself may be renewed and released by
        the same user on the same host (the CLI's rule), unless their holder process renews them
        itself (``held_by: process``); otherwise only by the same process.  It also says how
        the leases this locker grants are held: for another process (``held_by: shell``, the
        CLI's ``orc lock acquire``) or by this one (``process``).  ``domain_dir`` keeps the
        clone's lock domain id (default: ``.orc/local`` beside
        ``root``).  ``handover`` reads the releaser's ``HEAD``, which a release records in the
        tombstone (none is recorded without it)."""
        self.root = root
        self._root = os.fspath(root)
        _check_root(self._root)
        self._domain_dir = os.fspath(domain_dir if domain_dir is not None
                                     else root.parent / "local")
        self.user_owns = user_owns
        self.held_by = "shell" if user_owns else "process"
        self.holder = holder
        self.ttl = ttl
        self.mode = mode
        self._events = events
        self._guards = Guards(self._root)
        self._user, self._host = holder.identity.user, holder.identity.host
        self.handover = handover
        self._owner = holder.identity.owner

    @functools.cached_property
    def domain(self) -> str:
        """This clone's lock domain (where its tokens count), read once per locker; the first
        grant of a clone creates it."""
        return domain.load(self._domain_dir)

    def lock_domain(self, task_id: str) -> str:
        """The domain a state write under this locker's leases is fenced in."""
        return self.domain

    def tokens_granted(self, task_id: str, lock_domain: str | None) -> int | None:
        """How many tokens of ``lock_domain`` were granted for the task, if that domain is this
        clone's (its fence's size), else None: a state write uses it to tell a token recorded
        before the fence was reset from a newer holder's."""
        if lock_domain is None or lock_domain != self.domain:
            return None
        return domain.granted(self._guards.task_dir(check_task_id(task_id)))

    @contextmanager
    def guarded(self, task_id: str) -> Iterator[str]:
        """Hold the task's guard, the per-task mutex every lease (and state) change takes."""
        check_task_id(task_id)
        with self._guards.held(task_id):
            yield self._guards.task_dir(task_id)

    # -- reading and judging -------------------------------------------------------------

    def _read(self, task_dir: str, task_id: str,
              heads: dict[str, Head] | None = None) -> LockInfo | None:
        info = lockio.read(task_dir, task_id, heads)
        if info is not None and info.user is not None:
            info.mine = info.user == self._user and info.host == self._host
        return info

    def _judge(self, info: LockInfo, now: Callable[[], float]) -> LockInfo:
        return stale.judge(info, self.holder.host_id, now)

    def _clock(self) -> Callable[[], float]:
        return stale.fs_clock(self._root)

    def _same_process(self, info: LockInfo) -> bool:
        """The same holder: this process (or the one acted for) *and* this user; two users'
        commands run from one parent process are two holders."""
        return (info.pid == self.holder.pid and info.user == self._user
                and info.host_id == self.holder.host_id
                and abs((info.pid_started or 0.0) - self.holder.pid_started) < 1.0)

    def _may_touch(self, info: LockInfo, releasing: bool = False) -> bool:
        """May this locker renew (or release) ``info`` without force?  Its own holder may; the
        same user on the same host (``user_owns``) may too, unless the lease's process holds it
        itself and lives: then only its stale remains may be released."""
        if info.stale_reason == "unreadable":
            return False
        if self._same_process(info):
            return True
        if not (self.user_owns and info.mine):
            return False
        if info.held_by in (None, "shell"):
            return True
        return releasing and self._judge(info, self._clock()).stale

    def _refusal(self, info: LockInfo, force_hint: str) -> NotOwner:
        if info.mine and info.held_by not in (None, "shell"):
            return NotOwner(f"{info.task_id} is held by the running process {info.who()} "
                            "(`orc lock run`, `orc run` or hold()), which renews and releases "
                            f"it itself; {force_hint}", info)
        return NotOwner(f"{info.task_id} is locked by {info.who()}, not by you; {force_hint}",
                        info)

    def _emit(self, kind: str, task_id: str, info: LockInfo | None,
              previous: LockInfo | None = None) -> None:
        if self._events is not None:
            self._events(kind, task_id, info, previous, self.mode)


    # -- acting for another process of the holder -------------------------------------

    def _release_foreign(self, task_id: str, force: bool) -> bool:
        with self.guarded(task_id) as task_dir:
            current = self._read(task_dir, task_id)
            if current is None:
                return False
            ours = self._may_touch(current, releasing=True)
            if not force and not ours:
                raise self._refusal(current, "use --force to release it anyway")
            if current.stale_reason == "unreadable":
                lockio.remove(task_dir)
            else:
                # Another holder's lease released by force: its head is not ours to record.
                head = self._leaving(current.last_head) if ours else current.last_head
                lockio.replace(task_dir, lockyaml.tombstone(current, head))
        self._emit("released", task_id, None, current)
        return True

    def _leaving(self, last: Head | None) -> Head | None:
        """The head a release by this holder records (:meth:`Handover.to_leave`), signed."""
        if self.handover is None:
            return last
        return self.handover.to_leave(last, self._owner)

    def _heartbeat_foreign(self, task_id: str) -> LockInfo:
        with self.guarded(task_id) as task_dir:
            current = self._read(task_dir, task_id)
            if current is None:
                raise NotOwner(f"{task_id} is not locked; nothing to renew")
            if not self._may_touch(current):
                raise self._refusal(current, "only its holder renews it")
            info = current.with_(heartbeat_at=rfc3339(time.time()), lock_domain=self.domain)
            lockio.replace(task_dir, lockyaml.render(info))
            return info

    # -- reads and cleaning --------------------------------------------------------------

    def _settled_read(self, task_dir: str, task_id: str,
                      heads: dict[str, Head] | None = None) -> LockInfo | None:
        """A lock-free read, looked at again under the guard if it was unreadable: it may have
        caught a lease half written."""
        info = self._read(task_dir, task_id, heads)
        if info is None or info.stale_reason != "unreadable":
            return info
        try:
            guard = self._guards.take(task_id, create=False)
        except UnsafePath:  # a fence that is not a file: the lease stays unreadable to readers
            return info
        if guard is not None:
            try:
                self._guards.lock(guard, task_id, shared=True)
                info = self._read(task_dir, task_id)
            except LockHeld:
                pass
            finally:
                self._guards.give_back(task_id, guard)
        return info

    def is_locked(self, task_id: str) -> LockInfo:
        check_task_id(task_id)
        info = self._settled_read(self._guards.task_dir(task_id), task_id)
        if info is None:
            return LockInfo(task_id)
        return self._judge(info, self._clock())

    def left_head(self, task_id: str) -> Head | None:
        """The head the task's last release recorded, while it stays released."""
        heads: dict[str, Head] = {}
        self._read(self._guards.task_dir(check_task_id(task_id)), task_id, heads)
        return heads.get(task_id)

    def list_locks(self, heads: dict[str, Head] | None = None) -> list[LockInfo]:
        """Every lease; with ``heads``, the heads released leases recorded go there too (the
        git hooks' report reads both in one pass over the lease files)."""
        now = self._clock()
        out = []
        try:
            entries = sorted(e.name for e in os.scandir(self._root)
                             if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"cannot list {self._root}: {exc.strerror}") from None
        for name in entries:
            try:
                check_task_id(name)
            except Exception:
                continue
            info = self._settled_read(f"{self._root}/{name}", name, heads)
            if info is not None:
                out.append(self._judge(info, now))
        return out

    def clean(self) -> list[LockInfo]:
        """Remove every stale lease that can be removed; one that cannot (a directory in the
        way, a permission) does not stop the others: it is raised as a StorageError at the end."""
        removed = []
        failed: list[StorageError] = []
        for info in self.list_locks():
            if not info.stale:
                continue
            try:
                current = self._clean_one(info.task_id)
            except StorageError as exc:
                failed.append(exc)
                continue
            if current is None:
                continue
            warn("%s: removed a stale lease (%s)", info.task_id, current.stale_reason)
            self._emit("stale", info.task_id, None, current)
            removed.append(current)
        if failed:
            raise StorageError(f"removed {len(removed)} stale lease(s), but could not remove "
                               f"{len(failed)}: " + "; ".join(e.message for e in failed))
        return removed

    def _clean_one(self, task_id: str) -> LockInfo | None:
        with self.guarded(task_id) as task_dir:
            current = self._read(task_dir, task_id)
            if current is None:
                return None
            current = self._judge(current, self._clock())
            if not current.stale:
                return None
            lockio.remove(task_dir)
        return current

    def peek(self, task_id: str) -> lockio.Stamp | None:
        """A cheap fingerprint of the lease file (no read, no parse) for waiters to poll."""
        return lockio.current_stamp(f"{self._root}/{task_id}")
