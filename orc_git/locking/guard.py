"""The per-task guard: an exclusive ``flock`` on ``lock.fence``, and the fencing tokens it mints.

Every change to a task's ``lock.yaml`` happens under this guard, so creation, takeover, heartbeat
and release never interleave.  The fence file is never replaced or removed, so all processes lock
the same inode, and the kernel drops a dead process's lock, so ``kill -9`` never wedges a task.

A grant appends one byte to the fence under the guard; the file's new size is the token.  Tokens
therefore strictly increase across grants and releases, survive restarts, and cost one ``write``.

Open fence descriptors are kept per task and reused: opening one costs as much as the rest of an
uncontended acquire.  A descriptor is taken out of the cache while in use, so two threads of one
process never share one (``flock`` does not exclude users of the same open file); a forked child
drops the parent's cache, since it would share the parent's locks.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from orc_git.errors import GuardBusy, StorageError, UnsafePath

FENCE_NAME = "lock.fence"
GUARD_TIMEOUT = 10.0
CACHE_SIZE = 64

O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def storage_error(what: str, path: str, exc: OSError) -> StorageError:
    return StorageError(f"cannot {what} {path}: {exc.strerror or exc}")


def _regular(fd: int, path: str) -> int:
    """The fence must be a regular file: tokens are its size (a FIFO has none).  Checked when a
    fence is opened, which the descriptor cache makes once per task and process."""
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError as exc:
        os.close(fd)
        raise storage_error("open", path, exc) from None
    if not regular:
        os.close(fd)
        raise UnsafePath(f"{path} is not a regular file (a FIFO, a device?); orc-git keeps the "
                         "task's fencing tokens there. Remove it (this resets the task's tokens).")
    return fd


class Guards:
    def __init__(self, root: str) -> None:
        self.root = root
        self._free: dict[str, int] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def task_dir(self, task_id: str) -> str:
        task_dir = f"{self.root}/{task_id}"
        if os.path.islink(task_dir):
            raise UnsafePath(f"{task_dir} is a symbolic link; orc-git keeps leases inside "
                               f"{self.root} and will not follow it")
        return task_dir

    def take(self, task_id: str, create: bool = True) -> int | None:
        """An open fence descriptor for the task, unlocked; None if absent and not ``create``."""
        with self._lock:
            if self._pid != os.getpid():
                self._free.clear()  # inherited across fork: sharing them would share our locks
                self._pid = os.getpid()
            fd = self._free.pop(task_id, None)
        if fd is not None:
            return fd
        task_dir = self.task_dir(task_id)
        path = f"{task_dir}/{FENCE_NAME}"
        flags = (os.O_RDWR | os.O_APPEND | O_CLOEXEC | O_NOFOLLOW | os.O_NONBLOCK
                 | (os.O_CREAT if create else 0))
        for _ in range(2):
            try:
                fd = os.open(path, flags, 0o644)
            except FileNotFoundError:
                if not create:
                    return None
                try:
                    os.makedirs(task_dir, exist_ok=True)
                except OSError as exc:
                    raise storage_error("create the directory", task_dir, exc) from None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise StorageError(f"{path} is a symbolic link; orc-git will not follow "
                                       "it. Remove it (this resets the task's fencing tokens).") \
                        from None
                raise storage_error("open", path, exc) from None
            else:
                return _regular(fd, path)
        raise StorageError(f"cannot create {path}")

    def give_back(self, task_id: str, fd: int) -> None:
        """Unlock and keep the descriptor for the next operation on the task."""
        fcntl.flock(fd, fcntl.LOCK_UN)
        with self._lock:
            if self._pid == os.getpid() and task_id not in self._free \
                    and len(self._free) < CACHE_SIZE:
                self._free[task_id] = fd
                return
        os.close(fd)

    @staticmethod
    def lock(fd: int, task_id: str, shared: bool = False,
             timeout: float = GUARD_TIMEOUT) -> None:
        op = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        try:
            fcntl.flock(fd, op)
            return
        except BlockingIOError:
            pass
        deadline = time.monotonic() + timeout
        pause = 0.0005
        while True:
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
            try:
                fcntl.flock(fd, op)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise GuardBusy(f"{task_id}: another process has been updating this lease "
                                    f"for over {timeout:.0f} s (stopped mid-update?); "
                                    "try again") from None

    @contextmanager
    def held(self, task_id: str) -> Iterator[int]:
        fd = self.take(task_id)
        assert fd is not None
        try:
            self.lock(fd, task_id)
        except BaseException:
            self.give_back(task_id, fd)
            raise
        try:
            yield fd
        finally:
            self.give_back(task_id, fd)


def next_token(guard: int, at_least: int = 0) -> int:
    """Mint a fencing token (under the guard): above every token granted so far and above
    ``at_least`` (the current lease's), even if someone reset the fence file by hand."""
    os.write(guard, b"\n")
    token = os.lseek(guard, 0, os.SEEK_CUR)
    if token <= at_least:
        os.write(guard, b"\n" * (at_least + 1 - token))
        token = os.lseek(guard, 0, os.SEEK_CUR)
    return token
