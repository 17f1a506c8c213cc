"""Lease files on disk: read one without trusting it, write one so readers only see whole files.

Reads never follow a symlink, never block on a FIFO, read at most :data:`leasefile.MAX_BYTES`, and
turn every problem into an *unreadable* lease.  Writes create with ``O_EXCL`` (a fresh lease) or
write a temporary file and rename it over (a replacement); both return the new file, still open,
and its stamp.  While the writer keeps that descriptor open the inode cannot be freed and
reused, so "the path still names my inode" proves the lease on disk is the one it wrote, with one
``stat`` and no read.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Callable
from contextlib import suppress

from orc_git.locking import leasefile
from orc_git.locking.guard import O_CLOEXEC, O_NOFOLLOW, storage_error
from orc_git.locking.info import LockInfo

LOCK_NAME = "lock.yaml"
TMP_NAME = "lock.yaml.tmp"

Stamp = tuple[int, int, int]  # inode, mtime_ns, size: the inode proves it, the rest catches edits
Written = tuple[int, Stamp]  # the lease file, kept open, and its stamp


def stamp_of(st: os.stat_result) -> Stamp:
    return st.st_ino, st.st_mtime_ns, st.st_size


def current_stamp(task_dir: str) -> Stamp | None:
    try:
        return stamp_of(os.stat(f"{task_dir}/{LOCK_NAME}", follow_symlinks=False))
    except OSError:
        return None


def unreadable(task_id: str, why: str, path: str, mtime: float | None = None) -> LockInfo:
    return LockInfo(task_id, locked=True, stale=True, stale_reason="unreadable",
                    problem=f"{path}: {why}", mtime=mtime)


def read_raw(task_dir: str) -> bytes | None:
    try:
        fd = os.open(f"{task_dir}/{LOCK_NAME}", os.O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
    except OSError:
        return None
    try:
        return os.read(fd, leasefile.MAX_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)


def read(task_dir: str, task_id: str) -> LockInfo | None:
    """The lease as it is on disk, ``None`` when there is none; never raises for bad files."""
    path = f"{task_dir}/{LOCK_NAME}"
    try:
        fd = os.open(path, os.O_RDONLY | O_CLOEXEC | O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return unreadable(task_id, "it is a symbolic link (never followed)", path)
        if exc.errno == errno.ENOTDIR:
            return None
        return unreadable(task_id, exc.strerror or str(exc), path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return unreadable(task_id, "it is not a regular file", path, st.st_mtime)
        raw = os.read(fd, leasefile.MAX_BYTES + 1)
    except OSError as exc:
        return unreadable(task_id, exc.strerror or str(exc), path)
    finally:
        os.close(fd)
    try:
        info = leasefile.parse(raw, task_id)
    except leasefile.Unreadable as exc:
        return unreadable(task_id, str(exc), path, st.st_mtime)
    info.mtime = st.st_mtime
    return info


def fs_now(root: str) -> float:
    """The filesystem's clock: the mtime of a file created now beside the leases."""
    probe = f"{root}/.clock.{os.getpid()}.{threading.get_ident()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        try:
            return os.fstat(fd).st_mtime
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError:
        return time.time()  # a read-only store: the local clock is all there is


def _write_all(fd: int, content: bytes) -> Stamp:
    if os.write(fd, content) != len(content):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return stamp_of(os.fstat(fd))


def create(task_dir: str, content: Callable[[], bytes]) -> Written | None:
    """Create the lease if there is none (``O_EXCL``); ``None`` when one exists.  ``content`` is
    called only once the file is ours, so a contender mints no fencing token."""
    path = f"{task_dir}/{LOCK_NAME}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644)
    except FileExistsError:
        return None
    except OSError as exc:
        raise storage_error("create", path, exc) from None
    try:
        return fd, _write_all(fd, content())
    except OSError as exc:
        os.close(fd)
        os.unlink(path)
        raise storage_error("write", path, exc) from None


def replace(task_dir: str, content: bytes, keep: bool = False) -> Written | None:
    """Write the whole lease beside the old one and rename it over: readers see old or new.
    With ``keep`` the new file stays open and is returned."""
    tmp = f"{task_dir}/{TMP_NAME}"
    path = f"{task_dir}/{LOCK_NAME}"
    try:
        with suppress(FileNotFoundError):
            os.unlink(tmp)  # a leftover (or a planted symlink) from a crashed writer
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644)
        try:
            stamp = _write_all(fd, content)
            if os.path.isdir(path) and not os.path.islink(path):
                raise OSError(errno.EISDIR, "a directory is in the way; remove it by hand")
            os.rename(tmp, path)
        except BaseException:
            os.close(fd)
            raise
    except OSError as exc:
        with suppress(OSError):
            os.unlink(tmp)
        raise storage_error("write", path, exc) from None
    if keep:
        return fd, stamp
    os.close(fd)
    return None


def remove(task_dir: str) -> None:
    path = f"{task_dir}/{LOCK_NAME}"
    try:
        os.unlink(path)
    except IsADirectoryError:
        raise storage_error("remove", path, OSError(errno.EISDIR, "it is a directory, not a "
                                                    "lease; remove it by hand")) from None
    except OSError as exc:
        raise storage_error("remove", path, exc) from None
