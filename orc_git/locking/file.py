"""P2P leases: ``.orc/tasks/<TASK>/lock.yaml`` in the main worktree, guarded per task.

How it stays race-free whatever the interleaving: every change to a task's ``lock.yaml``
(creation, takeover, heartbeat, release, clean) happens while holding an exclusive ``flock`` on the
task's ``lock.fence`` file.  The fence is never replaced or removed, so all processes lock the same
inode; the kernel drops the lock when its holder dies, so a ``kill -9`` never wedges a task.
Readers (status, list) take no lock; they only see whole files because replacements are written
to a temporary file and renamed into place.

The fence also mints fencing tokens: a grant appends one byte to it under the guard and the
resulting size is the token, so tokens strictly increase across grants and releases, survive
restarts, and cost one ``write``.  Never edit or delete ``lock.fence``.

Why not ``filelock``: a bare ``filelock.FileLock`` acquire+release costs several times the whole
lease cycle here (see ``bench/lock_throughput.py``); the guard needs only ``fcntl.flock`` on a file
we must open anyway.  POSIX only.

Staleness: a lease is stale when it is unreadable, when its holder process is gone (judged only on
the same machine and PID namespace, by PID and process start time), or when the file was last
rewritten more than ``ttl`` seconds ago *by the filesystem's own clock*: the age compares the
file's mtime with the mtime of a probe file created just now in the same directory, so a skewed
clock on the reader's or writer's machine cannot make a live lease look stale.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from orc_git.errors import LeaseLost, LockHeld, NotOwner, StorageError
from orc_git.identity import Holder, process_alive
from orc_git.locking import leasefile
from orc_git.locking.info import LockEvent, LockInfo, rfc3339
from orc_git.taskid import check_task_id

log = logging.getLogger("orc_git.lock")

LOCK_NAME = "lock.yaml"
FENCE_NAME = "lock.fence"
TMP_NAME = "lock.yaml.tmp"
GUARD_TIMEOUT = 5.0
EventSink = Callable[[LockEvent], None]

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


@dataclass
class _Held:
    """A lease this locker granted in this process: its guard fd and the exact bytes written."""

    guard: int
    content: bytes
    info: LockInfo
    mutex: threading.Lock


def _storage_error(what: str, path: Path, exc: OSError) -> StorageError:
    return StorageError(f"cannot {what} {path}: {exc.strerror or exc}")


class FileLocker:
    name = "file"

    def __init__(self, root: Path, holder: Holder, *, ttl: int = 60,
                 events: EventSink | None = None, mode: str = "p2p",
                 user_owns: bool = False) -> None:
        """``user_owns``: leases this locker did not grant itself may be renewed and released by
        the same user on the same host (the CLI's rule); otherwise only by the same process."""
        self.root = root
        self.user_owns = user_owns
        self.holder = holder
        self.ttl = ttl
        self.mode = mode
        self._events = events
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._user, self._host = holder.identity.user, holder.identity.host

    @functools.cached_property
    def _me(self) -> LockInfo:
        """This holder as a lease, less the per-grant fields; built on the first write."""
        ident, holder = self.holder.identity, self.holder
        return LockInfo(task_id="", locked=True, owner=ident.owner, user=ident.user,
                        host=ident.host, pid=holder.pid, pid_started=holder.pid_started,
                        host_id=holder.host_id, display_name=ident.display_name,
                        email=ident.email, mine=True)

    # -- paths and the guard -------------------------------------------------------------

    def _dir(self, task_id: str) -> Path:
        task_dir = self.root / check_task_id(task_id)
        if os.path.islink(task_dir):
            raise StorageError(f"{task_dir} is a symbolic link; orc-git keeps leases inside "
                               f"{self.root} and will not follow it")
        return task_dir

    def _open_guard(self, task_dir: Path, create: bool = True) -> int | None:
        path = task_dir / FENCE_NAME
        flags = os.O_RDWR | os.O_APPEND | _O_CLOEXEC | _O_NOFOLLOW | (os.O_CREAT if create else 0)
        for _ in range(2):
            try:
                return os.open(path, flags, 0o644)
            except FileNotFoundError:
                if not create:
                    return None
                self._make_dir(task_dir)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise StorageError(f"{path} is a symbolic link; orc-git will not follow "
                                       "it. Remove it (this resets the task's fencing tokens).") \
                        from None
                raise _storage_error("open", path, exc) from None
        raise StorageError(f"cannot create {path}")

    def _make_dir(self, task_dir: Path) -> None:
        try:
            os.makedirs(task_dir, exist_ok=True)
        except OSError as exc:
            raise _storage_error("create the directory", task_dir, exc) from None

    @staticmethod
    def _lock_guard(fd: int, task_id: str, shared: bool = False) -> None:
        op = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        deadline = time.monotonic() + GUARD_TIMEOUT
        pause = 0.0005
        while True:
            try:
                fcntl.flock(fd, op)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockHeld(f"{task_id}: another process has been updating this lease for "
                                   f"over {GUARD_TIMEOUT:.0f} s (stopped mid-update?); "
                                   "try again") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.02)

    @contextmanager
    def _guarded(self, task_id: str) -> Iterator[tuple[Path, int]]:
        task_dir = self._dir(task_id)
        guard = self._open_guard(task_dir)
        assert guard is not None
        try:
            self._lock_guard(guard, task_id)
            yield task_dir, guard
        finally:
            os.close(guard)

    # -- reading and judging -------------------------------------------------------------

    def _read(self, task_dir: Path, task_id: str) -> LockInfo | None:
        """The lease as it is on disk, ``None`` when there is none; never raises for bad files."""
        path = task_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDONLY | _O_CLOEXEC | _O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return self._unreadable(task_id, "it is a symbolic link (never followed)", path)
            if exc.errno == errno.ENOTDIR:
                return None
            return self._unreadable(task_id, exc.strerror or str(exc), path)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return self._unreadable(task_id, "it is not a regular file", path, st.st_mtime)
            raw = os.read(fd, leasefile.MAX_BYTES + 1)
        except OSError as exc:
            return self._unreadable(task_id, exc.strerror or str(exc), path)
        finally:
            os.close(fd)
        try:
            info = leasefile.parse(raw, task_id)
        except leasefile.Unreadable as exc:
            return self._unreadable(task_id, str(exc), path, st.st_mtime)
        info.mtime = st.st_mtime
        info.mine = info.user == self._user and info.host == self._host
        return info

    @staticmethod
    def _unreadable(task_id: str, why: str, path: Path, mtime: float | None = None) -> LockInfo:
        return LockInfo(task_id, locked=True, stale=True, stale_reason="unreadable",
                        problem=f"{path}: {why}", mtime=mtime)

    def fs_now(self) -> float:
        """The filesystem's clock: the mtime of a file created now beside the leases."""
        probe = self.root / f".clock.{os.getpid()}.{threading.get_ident()}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_CLOEXEC | _O_NOFOLLOW,
                         0o600)
            try:
                return os.fstat(fd).st_mtime
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError:
            return time.time()  # read-only store: the local clock is all there is

    def _judge(self, info: LockInfo, now: Callable[[], float]) -> LockInfo:
        if info.stale_reason == "unreadable":
            return info
        reason = None
        same_host = info.host_id == self.holder.host_id and info.pid is not None
        if same_host and not process_alive(info.pid or 0, info.pid_started or 0.0):
            reason = "holder-dead"
        elif info.mtime is not None and info.ttl is not None and now() - info.mtime > info.ttl:
            reason = "expired"
        info.stale = reason is not None
        info.stale_reason = reason
        return info

    def _clock(self) -> Callable[[], float]:
        cache: list[float] = []

        def now() -> float:
            if not cache:
                cache.append(self.fs_now())
            return cache[0]

        return now

    def _same_process(self, info: LockInfo) -> bool:
        return (info.host_id == self.holder.host_id and info.pid == self.holder.pid
                and abs((info.pid_started or 0.0) - self.holder.pid_started) < 1.0)

    def _may_touch(self, info: LockInfo) -> bool:
        if info.stale_reason == "unreadable":
            return False
        return (info.mine if self.user_owns else False) or self._same_process(info)

    def _emit(self, kind: str, info: LockInfo | None, previous: LockInfo | None = None) -> None:
        if self._events is not None:
            task_id = (info or previous or self._me).task_id
            self._events(LockEvent(kind, task_id, info, previous,
                                   self.mode))

    # -- writing -------------------------------------------------------------------------

    def _next_token(self, guard: int, at_least: int = 0) -> int:
        os.write(guard, b"\n")
        token = os.lseek(guard, 0, os.SEEK_CUR)
        if token <= at_least:  # the fence was reset by hand: never hand out an old token again
            os.write(guard, b"\n" * (at_least + 1 - token))
            token = os.lseek(guard, 0, os.SEEK_CUR)
        return token

    def _lease(self, task_id: str, token: int, ttl: int, acquired: str | None = None,
               stolen_from: str | None = None) -> LockInfo:
        now = rfc3339(time.time())
        return self._me.with_(task_id=task_id, token=token, ttl=ttl, acquired_at=acquired or now,
                              heartbeat_at=now, stolen_from=stolen_from)

    @staticmethod
    def _replace(task_dir: Path, content: bytes) -> None:
        """Write the whole lease beside the old one and rename it over: readers see old or new."""
        tmp = task_dir / TMP_NAME
        path = task_dir / LOCK_NAME
        try:
            with suppress(FileNotFoundError):
                os.unlink(tmp)  # a leftover (or a planted symlink) from a crashed writer
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | _O_NOFOLLOW,
                         0o644)
            try:
                if os.write(fd, content) != len(content):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            finally:
                os.close(fd)
            if os.path.isdir(path) and not os.path.islink(path):
                raise OSError(errno.EISDIR, "a directory is in the way; remove it by hand")
            os.rename(tmp, path)
        except OSError as exc:
            with suppress(OSError):
                os.unlink(tmp)
            raise _storage_error("write", path, exc) from None

    def _create(self, task_dir: Path, guard: int, task_id: str, ttl: int) -> LockInfo | None:
        """The uncontended path: ``O_EXCL`` create; ``None`` when a lease already exists."""
        path = task_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | _O_NOFOLLOW,
                         0o644)
        except FileExistsError:
            return None
        except OSError as exc:
            raise _storage_error("create", path, exc) from None
        try:
            info = self._lease(task_id, self._next_token(guard), ttl)
            content = leasefile.render(info)
            if os.write(fd, content) != len(content):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            os.close(fd)
            os.unlink(path)
            raise _storage_error("write", path, exc) from None
        os.close(fd)
        self._keep(task_id, guard, content, info)
        return info

    def _keep(self, task_id: str, guard: int, content: bytes, info: LockInfo) -> None:
        with self._lock:
            self._held[task_id] = _Held(guard, content, info, threading.Lock())

    # -- the Locker interface ------------------------------------------------------------

    def acquire(self, task_id: str, *, ttl: int | None = None, force: bool = False) -> LockInfo:
        task_dir = self._dir(task_id)
        ttl = self.ttl if ttl is None else ttl
        if task_id in self._held:
            raise LockHeld(f"{task_id} is already held by this process "
                           f"(token {self._held[task_id].info.token})", self._held[task_id].info)
        guard = self._open_guard(task_dir)
        assert guard is not None
        try:
            self._lock_guard(guard, task_id)
            info = self._create(task_dir, guard, task_id, ttl)
            if info is None:
                info = self._acquire_existing(task_dir, guard, task_id, ttl, force)
            fcntl.flock(guard, fcntl.LOCK_UN)
        except BaseException:
            os.close(guard)
            with self._lock:
                held = self._held.get(task_id)
                if held is not None and held.guard == guard:
                    del self._held[task_id]
            raise
        self._emit("acquired", info)
        return info

    def _acquire_existing(self, task_dir: Path, guard: int, task_id: str, ttl: int,
                          force: bool) -> LockInfo:
        current = self._read(task_dir, task_id)
        if current is None:  # removed behind the guard's back (by hand): start afresh
            info = self._create(task_dir, guard, task_id, ttl)
            if info is None:
                raise LockHeld(f"{task_id}: the lease changed while acquiring; try again")
            return info
        if self._same_process(current):
            # Re-acquiring one's own lease (e.g. `orc lock acquire` twice from one shell) renews it.
            info = current.with_(heartbeat_at=rfc3339(time.time()), ttl=ttl, mine=True)
            content = leasefile.render(info)
            self._replace(task_dir, content)
            self._keep(task_id, guard, content, info)
            return info
        current = self._judge(current, self._clock())
        if not current.stale and not force:
            raise LockHeld(f"{task_id} is locked by {current.who()} since {current.acquired_at}",
                           current)
        stolen = None if current.stale else (current.owner or "unknown")
        info = self._lease(task_id, self._next_token(guard, current.token or 0), ttl,
                           stolen_from=stolen)
        content = leasefile.render(info)
        self._replace(task_dir, content)
        self._keep(task_id, guard, content, info)
        if stolen:
            log.warning("%s: lease of %s stolen (forced), token %s", task_id, current.who(),
                        info.token)
            self._emit("stolen", info, current)
        else:
            detail = current.problem if current.stale_reason == "unreadable" else current.who()
            log.warning("%s: took over a stale lease (%s: %s), token %s", task_id,
                        current.stale_reason, detail, info.token)
            self._emit(str(current.stale_reason), info, current)
        return info

    def _still_mine(self, task_dir: Path, held: _Held) -> LockInfo | None:
        """Under the guard: the current lease if it is still ours, else raise LeaseLost."""
        path = task_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDONLY | _O_CLOEXEC | _O_NOFOLLOW)
            try:
                raw = os.read(fd, leasefile.MAX_BYTES + 1)
            finally:
                os.close(fd)
        except OSError:
            raw = b""
        if raw == held.content:
            return held.info
        current = self._read(task_dir, held.info.task_id)
        if current is not None and current.token == held.info.token and self._same_process(
                current):
            return current  # renewed by another call of the same holder
        task = held.info.task_id
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
            task_dir = self._dir(task_id)
            try:
                self._lock_guard(held.guard, task_id)
                try:
                    self._still_mine(task_dir, held)
                except LeaseLost as exc:
                    log.warning("%s", exc.message)
                    return False
                try:
                    os.unlink(task_dir / LOCK_NAME)
                except OSError as exc:
                    raise _storage_error("remove", task_dir / LOCK_NAME, exc) from None
            finally:
                os.close(held.guard)
        self._emit("released", None, held.info)
        return True

    def _release_foreign(self, task_id: str, force: bool) -> bool:
        with self._guarded(task_id) as (task_dir, _):
            current = self._read(task_dir, task_id)
            if current is None:
                return False
            if not force and not self._may_touch(current):
                raise NotOwner(f"{task_id} is locked by {current.who()}, not by you; "
                               "use --force to release it anyway", current)
            try:
                os.unlink(task_dir / LOCK_NAME)
            except OSError as exc:
                raise _storage_error("remove", task_dir / LOCK_NAME, exc) from None
        self._emit("released", None, current)
        return True

    def heartbeat(self, task_id: str) -> LockInfo:
        held = self._held.get(task_id)
        if held is None:
            return self._heartbeat_foreign(task_id)
        with held.mutex:
            if self._held.get(task_id) is not held:
                raise LeaseLost(f"{task_id}: the lease was released")
            task_dir = self._dir(task_id)
            self._lock_guard(held.guard, task_id)
            try:
                try:
                    current = self._still_mine(task_dir, held)
                except LeaseLost:
                    with self._lock:
                        self._held.pop(task_id, None)
                    os.close(held.guard)
                    self._emit("lost", None, held.info)
                    raise
                assert current is not None
                info = current.with_(heartbeat_at=rfc3339(time.time()), mine=True)
                content = leasefile.render(info)
                self._replace(task_dir, content)
                held.content, held.info = content, info
                return info
            finally:
                if self._held.get(task_id) is held:
                    fcntl.flock(held.guard, fcntl.LOCK_UN)

    def _heartbeat_foreign(self, task_id: str) -> LockInfo:
        with self._guarded(task_id) as (task_dir, _):
            current = self._read(task_dir, task_id)
            if current is None:
                raise NotOwner(f"{task_id} is not locked; nothing to renew")
            if not self._may_touch(current):
                raise NotOwner(f"{task_id} is locked by {current.who()}, not by you", current)
            info = current.with_(heartbeat_at=rfc3339(time.time()))
            self._replace(task_dir, leasefile.render(info))
            return info

    def is_locked(self, task_id: str) -> LockInfo:
        task_dir = self._dir(task_id)
        info = self._read(task_dir, task_id)
        if info is not None and info.stale_reason == "unreadable":
            # Maybe caught between create and write: look again once the writer is done.
            guard = self._open_guard(task_dir, create=False)
            if guard is not None:
                try:
                    self._lock_guard(guard, task_id, shared=True)
                    info = self._read(task_dir, task_id)
                except LockHeld:
                    pass
                finally:
                    os.close(guard)
        if info is None:
            return LockInfo(task_id)
        return self._judge(info, self._clock())

    def list_locks(self) -> list[LockInfo]:
        now = self._clock()
        out = []
        try:
            entries = sorted(e.name for e in os.scandir(self.root)
                             if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _storage_error("list", self.root, exc) from None
        for name in entries:
            try:
                check_task_id(name)
            except Exception:
                continue
            info = self._read(self.root / name, name)
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
            log.warning("%s: removed a stale lease (%s)", info.task_id, current.stale_reason)
            self._emit("stale", None, current)
            removed.append(current)
        if failed:
            raise StorageError(f"removed {len(removed)} stale lease(s), but could not remove "
                               f"{len(failed)}: " + "; ".join(e.message for e in failed))
        return removed

    def _clean_one(self, task_id: str) -> LockInfo | None:
        with self._guarded(task_id) as (task_dir, _):
            current = self._read(task_dir, task_id)
            if current is None:
                return None
            current = self._judge(current, self._clock())
            if not current.stale:
                return None
            try:
                os.unlink(task_dir / LOCK_NAME)
            except IsADirectoryError:
                raise StorageError(f"{task_dir / LOCK_NAME} is a directory, not a lease; "
                                   "remove it by hand") from None
            except OSError as exc:
                raise _storage_error("remove", task_dir / LOCK_NAME, exc) from None
        return current

    def peek(self, task_id: str) -> tuple[int, int] | None:
        """A cheap fingerprint of the lease file (no read, no parse) for waiters to poll."""
        try:
            st = os.stat(self.root / task_id / LOCK_NAME, follow_symlinks=False)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns
