"""P2P leases: ``.orc/tasks/<TASK>/lock.yaml`` in the main worktree.

Race freedom comes from the per-task guard (:mod:`orc_git.locking.guard`): every change to a
lease happens under it, and readers, which take no lock, never mistake a half-written lease for
a whole one (:mod:`orc_git.locking.leasefs`).  The uncontended cycle is a handful of syscalls,
no YAML and no directory change: the grant writes over the tombstone its predecessor's release
left, and the lease written stays open, so releasing it needs a ``stat`` and a ``pread`` (is the
path still my inode, holding my bytes?), not a parse.  POSIX only (``fcntl.flock``); a bare
``filelock.FileLock`` cycle costs more than this whole cycle (``bench/lock_throughput.py``).

Staleness is judged by :mod:`orc_git.locking.stale`.
"""

from __future__ import annotations

import fcntl
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from orc_git import flatyaml
from orc_git.errors import LeaseLost, LockHeld, NotOwner, StorageError, UnsafePath
from orc_git.identity import Holder
from orc_git.locking import domain, leasefile, leasefs, stale
from orc_git.locking.guard import Guards, next_token
from orc_git.locking.info import LockInfo, rfc3339
from orc_git.safefs import real_dir_problem
from orc_git.taskid import check_task_id


def _warn(message: str, *args: object) -> None:
    """Log lines are rare (takeovers, losses): ``logging`` is imported only when one is due,
    which keeps it off the git hooks' path."""
    import logging

    logging.getLogger("orc_git.lock").warning(message, *args)

EventSink = Callable[[str, str, LockInfo | None, LockInfo | None, str], None]
_HOLDER_FIELDS = ("owner", "user", "host", "host_id", "pid", "pid_started", "display_name",
                  "email")


class _Held:
    """A lease this locker granted in this process: its guard, and the lease file it wrote, kept
    open so that its inode and bytes identify it (see :mod:`orc_git.locking.leasefs`)."""

    __slots__ = ("guard", "info", "mutex", "written")

    def __init__(self, guard: int, written: leasefs.Written, info: LockInfo,
                 mutex: threading.Lock) -> None:
        self.guard, self.written, self.info, self.mutex = guard, written, info, mutex

    def close(self) -> None:
        os.close(self.written[0])


def _check_root(root: str) -> None:
    """Once per locker, not per acquire: the lease directory must be a real directory (or not
    exist yet), never a link out of the repository; with it real, every lease path below it is
    a task directory (refused when it is a link, :meth:`Guards.task_dir`) and a file opened
    ``O_NOFOLLOW``."""
    why = real_dir_problem(root)
    if why is not None:
        raise UnsafePath(f"{root}: {why}; refusing to keep leases there")


@functools.lru_cache(maxsize=4)
def _now_text(second: int) -> str:
    return rfc3339(second)


class FileLocker:
    name = "file"

    def __init__(self, root: Path, holder: Holder, *, ttl: int = 60,
                 events: EventSink | None = None, mode: str = "p2p",
                 user_owns: bool = False, domain_dir: Path | None = None) -> None:
        """``user_owns``: leases this locker did not grant itself may be renewed and released by
        the same user on the same host (the CLI's rule); otherwise only by the same process.
        ``domain_dir`` keeps the clone's lock domain id (default: ``.orc/local`` beside
        ``root``)."""
        self.root = root
        self._root = os.fspath(root)
        _check_root(self._root)
        self._domain_dir = os.fspath(domain_dir if domain_dir is not None
                                     else root.parent / "local")
        self.user_owns = user_owns
        self.holder = holder
        self.ttl = ttl
        self.mode = mode
        self._events = events
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._guards = Guards(self._root)
        self._user, self._host = holder.identity.user, holder.identity.host

    @functools.cached_property
    def _me(self) -> LockInfo:
        """This holder as a lease, less the per-grant fields; built on the first write."""
        ident, holder = self.holder.identity, self.holder
        return LockInfo(task_id="", locked=True, owner=ident.owner, user=ident.user,
                        host=ident.host, pid=holder.pid, pid_started=holder.pid_started,
                        host_id=holder.host_id, display_name=ident.display_name,
                        email=ident.email, mine=True)

    @functools.cached_property
    def _me_bytes(self) -> bytes:
        return flatyaml.dump((k, getattr(self._me, k)) for k in _HOLDER_FIELDS)

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

    def _read(self, task_dir: str, task_id: str) -> LockInfo | None:
        info = leasefs.read(task_dir, task_id)
        if info is not None and info.user is not None:
            info.mine = info.user == self._user and info.host == self._host
        return info

    def _judge(self, info: LockInfo, now: Callable[[], float]) -> LockInfo:
        return stale.judge(info, self.holder.host_id, now)

    def _clock(self) -> Callable[[], float]:
        return stale.fs_clock(self._root)

    def _same_process(self, info: LockInfo) -> bool:
        return (info.host_id == self.holder.host_id and info.pid == self.holder.pid
                and abs((info.pid_started or 0.0) - self.holder.pid_started) < 1.0)

    def _may_touch(self, info: LockInfo) -> bool:
        if info.stale_reason == "unreadable":
            return False
        return (self.user_owns and info.mine) or self._same_process(info)

    def _emit(self, kind: str, task_id: str, info: LockInfo | None,
              previous: LockInfo | None = None) -> None:
        if self._events is not None:
            self._events(kind, task_id, info, previous, self.mode)

    # -- writing -------------------------------------------------------------------------

    def _grant(self, task_id: str, token: int, ttl: int, stolen_from: str | None = None,
               into: list[LockInfo] | None = None) -> bytes:
        """The lease of a new grant as bytes; its LockInfo is appended to ``into``."""
        now = _now_text(int(time.time()))
        me = self._me
        info = LockInfo(task_id, True, False, None, me.owner, me.user, me.host, me.pid, now,
                        now, ttl, token, True, me.pid_started, me.host_id, me.display_name,
                        me.email, stolen_from, None, None, self.domain)
        if into is not None:
            into.append(info)
        return leasefile.grant_head(task_id, now, ttl, token, stolen_from) + self._me_bytes

    def _keep(self, task_id: str, guard: int, written: leasefs.Written, info: LockInfo) -> None:
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
        tombstone = None if force else leasefs.open_tombstone(task_dir)
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
            written = leasefs.claim(task_dir, lambda: self._grant(
                task_id, next_token(guard), ttl, into=granted), tombstone)
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
                          force: bool) -> tuple[LockInfo, leasefs.Written]:
        current = self._read(task_dir, task_id)
        if current is None:  # removed behind the guard's back (by hand): start afresh
            granted: list[LockInfo] = []
            written = leasefs.claim(task_dir, lambda: self._grant(
                task_id, next_token(guard), ttl, into=granted))
            if written is None:
                raise LockHeld(f"{task_id}: the lease changed while acquiring; try again")
            return granted[0], written
        if self._same_process(current):
            # Re-acquiring one's own lease (`orc lock acquire` twice from one shell) renews it.
            info = current.with_(heartbeat_at=rfc3339(time.time()), ttl=ttl, mine=True,
                                 lock_domain=self.domain)
            kept = leasefs.replace(task_dir, leasefile.render(info), keep=True)
            assert kept is not None
            return info, kept
        current = self._judge(current, self._clock())
        if not current.stale and not force:
            raise LockHeld(f"{task_id} is locked by {current.who()} since {current.acquired_at}",
                           current)
        stolen = None if current.stale else (current.owner or "unknown")
        taken: list[LockInfo] = []
        content = self._grant(task_id, next_token(guard, current.token or 0), ttl, stolen,
                              into=taken)
        info = taken[0]
        kept = leasefs.replace(task_dir, content, keep=True)
        assert kept is not None
        if stolen:
            _warn("%s: lease of %s stolen (forced), token %s", task_id, current.who(),
                        info.token)
            self._emit("stolen", task_id, info, current)
        else:
            detail = current.problem if current.stale_reason == "unreadable" else current.who()
            _warn("%s: took over a stale lease (%s: %s), token %s", task_id,
                        current.stale_reason, detail, info.token)
            self._emit(str(current.stale_reason), task_id, info, current)
        return info, kept

    def _still_mine(self, task_dir: str, held: _Held) -> LockInfo | None:
        """Under the guard: ``None`` if the lease file is still the one written (it may be
        rewritten in place), the lease if another call of this holder renewed it, else raise
        LeaseLost."""
        if leasefs.holds(task_dir, held.written):
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
                    _warn("%s", exc.message)
                    return False
                self._bury(task_dir, held.written[0] if renewed is None else None)
            finally:
                held.close()
                self._guards.give_back(task_id, held.guard)
        self._emit("released", task_id, None, held.info)
        return True

    @staticmethod
    def _bury(task_dir: str, fd: int | None) -> None:
        """End a lease: in place through its open file when we have it, else by removing it."""
        if fd is not None:
            try:
                leasefs.bury(fd)
                return
            except OSError:
                pass  # e.g. EIO: removing the file frees the task as well
        leasefs.remove(task_dir)

    def _release_foreign(self, task_id: str, force: bool) -> bool:
        with self.guarded(task_id) as task_dir:
            current = self._read(task_dir, task_id)
            if current is None:
                return False
            if not force and not self._may_touch(current):
                raise NotOwner(f"{task_id} is locked by {current.who()}, not by you; "
                               "use --force to release it anyway", current)
            leasefs.remove(task_dir)
        self._emit("released", task_id, None, current)
        return True

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
                info = current.with_(heartbeat_at=rfc3339(time.time()), mine=True,
                                     lock_domain=self.domain)
                kept = leasefs.replace(task_dir, leasefile.render(info), keep=True)
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

    def _heartbeat_foreign(self, task_id: str) -> LockInfo:
        with self.guarded(task_id) as task_dir:
            current = self._read(task_dir, task_id)
            if current is None:
                raise NotOwner(f"{task_id} is not locked; nothing to renew")
            if not self._may_touch(current):
                raise NotOwner(f"{task_id} is locked by {current.who()}, not by you", current)
            info = current.with_(heartbeat_at=rfc3339(time.time()), lock_domain=self.domain)
            leasefs.replace(task_dir, leasefile.render(info))
            return info

    def _settled_read(self, task_dir: str, task_id: str) -> LockInfo | None:
        """A lock-free read, looked at again under the guard if it was unreadable: it may have
        caught a lease half written."""
        info = self._read(task_dir, task_id)
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

    def list_locks(self) -> list[LockInfo]:
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
            info = self._settled_read(f"{self._root}/{name}", name)
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
            _warn("%s: removed a stale lease (%s)", info.task_id, current.stale_reason)
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
            leasefs.remove(task_dir)
        return current

    def peek(self, task_id: str) -> leasefs.Stamp | None:
        """A cheap fingerprint of the lease file (no read, no parse) for waiters to poll."""
        return leasefs.current_stamp(f"{self._root}/{task_id}")
