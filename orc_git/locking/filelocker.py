"""P2P leases: ``.orc/tasks/<TASK>/lock.yaml`` in the main worktree, granted to this process.

Race freedom comes from the per-task guard (:mod:`orc_git.locking.guard`): every change to a
lease happens under it, and readers, which take no lock, never mistake a half-written lease for
a whole one (:mod:`orc_git.locking.lockio`).  The uncontended cycle is a handful of syscalls,
no YAML and no directory change: the grant writes over the tombstone its predecessor's release
left, and the lease written stays open, so releasing it needs a ``stat`` and a ``pread`` (is the
path still my inode, holding my bytes?), not a parse.  POSIX only (``fcntl.flock``); a bare
``filelock.FileLock`` cycle costs more than this whole cycle (``bench/lock_throughput.py``).

Reading, judging and cleaning leases, and acting for another process, are
:class:`~orc_git.locking.filestore.FileLockStore`'s, which this locker extends.
"""

from __future__ import annotations

import fcntl
import functools
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from orc_git import flatyaml
from orc_git.errors import LeaseLost, LockHeld
from orc_git.handover import head_line, parse_head_line
from orc_git.identity import Holder
from orc_git.locking import lockio, lockyaml
from orc_git.locking.filestore import EventSink, FileLockStore, warn
from orc_git.locking.guard import next_token
from orc_git.locking.info import LockInfo, parse_rfc3339, rfc3339
from orc_git.taskid import check_task_id

if TYPE_CHECKING:
    from orc_git.handover import Handover, Head

_HOLDER_FIELDS = ("owner", "user", "host", "host_id", "pid", "pid_started", "display_name",
                  "email", "held_by")


class _Held:
    """A lease this locker granted in this process: its guard, and the lease file it wrote, kept
    open so that its inode and bytes identify it (see :mod:`orc_git.locking.lockio`)."""

    __slots__ = ("guard", "info", "mutex", "written")

    def __init__(self, guard: int, written: lockio.Written, info: LockInfo,
                 mutex: threading.Lock) -> None:
        self.guard, self.written, self.info, self.mutex = guard, written, info, mutex

    def close(self) -> None:
        os.close(self.written[0])


@functools.lru_cache(maxsize=4)
def _now_text(second: int) -> str:
    return rfc3339(second)


def _say_if_overdue(info: LockInfo, now: float) -> None:
    """A renewal later than the TTL (this process was stopped or starved): the lease had
    expired, yet nobody took it (that would have failed :meth:`FileLocker._still_mine`), so the
    renewal is good and the token still the newest; it is said, not hidden.  ``heartbeat_at``
    has whole seconds: a second of slack keeps a punctual renewal from being reported."""
    beat = parse_rfc3339(info.heartbeat_at) if info.heartbeat_at else None
    if beat is not None and info.ttl is not None and now - beat > info.ttl + 1:
        warn("%s: the lease had expired at %s (not renewed for %.0f s, ttl %s s); nobody took "
             "it over, so it is renewed and token %s is still this holder's", info.task_id,
             rfc3339(beat + info.ttl), now - beat, info.ttl, info.token)


class FileLocker(FileLockStore):
    """The p2p locker: a :class:`FileLockStore` that grants leases to its holder and keeps the
    ones it granted open, for a renewal and release that need no parse."""

    def __init__(self, root: Path, holder: Holder, *, ttl: int = 60,
                 events: EventSink | None = None, mode: str = "p2p",
                 user_owns: bool = False, domain_dir: Path | None = None,
                 handover: Handover | None = None) -> None:
        super().__init__(root, holder, ttl=ttl, events=events, mode=mode, user_owns=user_owns,
                         domain_dir=domain_dir, handover=handover)
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()

    @functools.cached_property
    def _me(self) -> LockInfo:
        """This holder as a lease, less the per-grant fields; built on the first write."""
        ident, holder = self.holder.identity, self.holder
        return LockInfo(task_id="", locked=True, owner=ident.owner, user=ident.user,
                        host=ident.host, pid=holder.pid, pid_started=holder.pid_started,
                        host_id=holder.host_id, display_name=ident.display_name,
                        email=ident.email, mine=True, held_by=self.held_by)

    @functools.cached_property
    def _me_bytes(self) -> bytes:
        return flatyaml.dump((k, getattr(self._me, k)) for k in _HOLDER_FIELDS)

    # -- writing -------------------------------------------------------------------------

    def _grant(self, task_id: str, token: int, ttl: int, stolen_from: str | None = None,
               into: list[LockInfo] | None = None, last: Head | None = None) -> bytes:
        """The lease of a new grant as bytes; its LockInfo is appended to ``into``.  ``last``
        is the head the previous holder left, carried on as ``last_head``."""
        now = _now_text(int(time.time()))
        me = self._me
        info = LockInfo(task_id, True, False, None, me.owner, me.user, me.host, me.pid, now,
                        now, ttl, token, True, me.pid_started, me.host_id, me.display_name,
                        me.email, stolen_from, None, None, self.domain, me.held_by, last)
        if into is not None:
            into.append(info)
        content = lockyaml.grant_head(task_id, now, ttl, token, stolen_from) + self._me_bytes
        return content if last is None else content + head_line(last, b"last_head")

    def _keep(self, task_id: str, guard: int, written: lockio.Written, info: LockInfo) -> None:
        with self._lock:
            self._held[task_id] = _Held(guard, written, info, threading.Lock())

    # -- the Locker interface ------------------------------------------------------------

    def acquire(self, task_id: str, *, ttl: int | None = None, force: bool = False) -> LockInfo:
        check_task_id(task_id)
        ttl = self.ttl if ttl is None else ttl
        held = self._held.get(task_id)
        if held is not None:
            raise LockHeld(f"{task_id} is already held by this process "
                           f"(token {held.info.token})", held.info)
        _ = self.domain  # read (or created) on the first grant, before any guard: then kept
        task_dir = f"{self._root}/{task_id}"
        tombstone = None if force else lockio.open_tombstone(task_dir)
        if not force and tombstone is None:
            # A live lease is refused without taking the guard: contenders only read, so they
            # never crowd out the holder's own heartbeat and release.
            seen = self._read(task_dir, task_id)
            if seen is not None and not self._same_process(seen):
                seen = self._judge(seen, self._clock())
                if not seen.stale:
                    raise LockHeld(f"{task_id} is locked by {seen.who()} since "
                                   f"{seen.acquired_at}", seen)
        guards = self._guards
        guard = None
        try:
            guard = guards.take(task_id)
            assert guard is not None
            guards.lock(guard, task_id)
        except BaseException:
            if guard is not None:
                guards.give_back(task_id, guard)
            if tombstone is not None:
                os.close(tombstone)
            raise
        try:
            granted: list[LockInfo] = []
            written = lockio.claim(task_dir, lambda old: self._grant(
                task_id, next_token(guard), ttl, into=granted, last=parse_head_line(old)),
                tombstone)
            if written is None:
                info, written = self._acquire_existing(task_dir, guard, task_id, ttl, force)
            else:
                info = granted[0]
            self._keep(task_id, guard, written, info)
        except BaseException:
            guards.give_back(task_id, guard)
            raise
        fcntl.flock(guard, fcntl.LOCK_UN)
        self._emit("acquired", task_id, info)
        return info

    def _acquire_existing(self, task_dir: str, guard: int, task_id: str, ttl: int,
                          force: bool) -> tuple[LockInfo, lockio.Written]:
        current = self._read(task_dir, task_id)
        if current is None:  # removed behind the guard's back (by hand): start afresh
            granted: list[LockInfo] = []
            written = lockio.claim(task_dir, lambda old: self._grant(
                task_id, next_token(guard), ttl, into=granted, last=parse_head_line(old)))
            if written is None:
                raise LockHeld(f"{task_id}: the lease changed while acquiring; try again")
            return granted[0], written
        if self._same_process(current):
            # Re-acquiring one's own lease (`orc lock acquire` twice from one shell) renews it.
            info = current.with_(heartbeat_at=rfc3339(time.time()), ttl=ttl, mine=True,
                                 lock_domain=self.domain)
            kept = lockio.replace(task_dir, lockyaml.render(info), keep=True)
            assert kept is not None
            return info, kept
        current = self._judge(current, self._clock())
        if not current.stale and not force:
            raise LockHeld(f"{task_id} is locked by {current.who()} since {current.acquired_at}",
                           current)
        stolen = None if current.stale else (current.owner or "unknown")
        taken: list[LockInfo] = []
        content = self._grant(task_id, next_token(guard, current.token or 0), ttl, stolen,
                              into=taken, last=current.last_head)
        info = taken[0]
        kept = lockio.replace(task_dir, content, keep=True)
        assert kept is not None
        if stolen:
            warn("%s: lease of %s stolen (forced), token %s", task_id, current.who(),
                        info.token)
            self._emit("stolen", task_id, info, current)
        else:
            detail = current.problem if current.stale_reason == "unreadable" else current.who()
            warn("%s: took over a stale lease (%s: %s), token %s", task_id,
                        current.stale_reason, detail, info.token)
            self._emit(str(current.stale_reason), task_id, info, current)
        return info, kept

    def _still_mine(self, task_dir: str, held: _Held) -> LockInfo | None:
        """Under the guard: ``None`` if the lease file is still the one written (it may be
        rewritten in place), the lease if another call of this holder renewed it, else raise
        LeaseLost."""
        if lockio.holds(task_dir, held.written):
            return None
        task = held.info.task_id
        current = self._read(task_dir, task)
        if current is not None and current.token == held.info.token and self._same_process(
                current):
            return current
        if current is None:
            raise LeaseLost(f"{task}: the lease was removed by someone else")
        if current.stolen_from:
            raise LeaseLost(f"{task}: the lease was stolen by {current.who()} "
                            f"(token {current.token})")
        raise LeaseLost(f"{task}: the lease was taken over by {current.who()} "
                        f"(token {current.token})")

    def release(self, task_id: str, *, force: bool = False) -> bool:
        with self._lock:
            held = self._held.pop(task_id, None)
        if held is None:
            return self._release_foreign(task_id, force)
        with held.mutex:
            try:
                self._guards.lock(held.guard, task_id)
                task_dir = f"{self._root}/{task_id}"
                try:
                    renewed = self._still_mine(task_dir, held)
                except LeaseLost as exc:
                    warn("%s", exc.message)
                    return False
                head = self._leaving(held.info.last_head)
                if renewed is None:
                    self._bury(task_dir, held.written, head)
                else:  # rewritten by another call of this holder: not the file kept open
                    lockio.replace(task_dir, lockyaml.tombstone(renewed, head))
            finally:
                held.close()
                self._guards.give_back(task_id, held.guard)
        self._emit("released", task_id, None, held.info)
        return True

    @staticmethod
    def _bury(task_dir: str, written: lockio.Written, head: Head | None) -> None:
        """End a lease in place through its open file, recording ``head``; if the file cannot
        be written, by removing it.  ``head`` is written over the lease's last line when that
        is its ``last_head`` (which a tombstone does not need), padded to its length: the next
        grant's lease, which carries ``head`` on as ``last_head``, is then as long as this
        tombstone, and writing it needs no truncation."""
        fd, _, content = written
        tail, at = b"", len(content)
        if head is not None:
            tail = head_line(head)
            start = content.rfind(b"\nlast_head: ") + 1
            if start:
                at = start
                if len(tail) < len(content) - start:
                    tail = tail[:-1] + b" " * (len(content) - start - len(tail)) + b"\n"
        try:
            lockio.bury(fd, tail, at)
        except OSError:
            lockio.remove(task_dir)  # e.g. EIO: removing the file frees the task as well

    def heartbeat(self, task_id: str) -> LockInfo:
        held = self._held.get(task_id)
        if held is None:
            return self._heartbeat_foreign(task_id)
        with held.mutex:
            if self._held.get(task_id) is not held:
                raise LeaseLost(f"{task_id}: the lease was released")
            self._guards.lock(held.guard, task_id)
            task_dir = f"{self._root}/{task_id}"
            try:
                current = self._still_mine(task_dir, held) or held.info
                now = time.time()
                _say_if_overdue(current, now)
                info = current.with_(heartbeat_at=rfc3339(now), mine=True,
                                     lock_domain=self.domain)
                kept = lockio.replace(task_dir, lockyaml.render(info), keep=True)
                assert kept is not None
                held.close()
                held.written = kept
                held.info = info
                return info
            except LeaseLost:
                with self._lock:
                    self._held.pop(task_id, None)
                held.close()
                self._emit("lost", task_id, None, held.info)
                raise
            finally:
                fcntl.flock(held.guard, fcntl.LOCK_UN)
                if self._held.get(task_id) is not held:
                    self._guards.give_back(task_id, held.guard)
