"""Lease files on disk: read one without trusting it, write one so readers see whole leases.

Reads never follow a symlink, never block on a FIFO, read at most :data:`lockyaml.MAX_BYTES`, and
turn every problem into an *unreadable* lease.

Every lease starts with the line ``released: false``.  The holder's own release rewrites just
that line, in place, to ``released: true `` (the same length): the file becomes a *tombstone*,
still the whole record of the last lease, and the next grant writes its lease over it in place.
So the common cycle changes no directory: creating and unlinking a file cost more than the rest
of the cycle together, and swing with the disk.  A task is free when it has no ``lock.yaml`` or
when the file starts with ``released: true``.  Other writes create with ``O_EXCL`` (the first
lease) or write a temporary file and rename it over (takeover, renewal), so readers see the old
or the new file.

An in-place write can be caught half done by a reader that takes no lock, and must never pass for
a wrong lease.  A release is one write of one line.  A grant over a tombstone writes the body
first, under the tombstone's first line, and flips that line last: a reader sees a tombstone (the
grant has not happened yet) or the whole new lease; bytes torn inside the first line, or a body
cut short by a size read before it grew, read as unreadable, which every deciding reader looks at
again under the task's guard.

Every write returns the file, still open, its inode and the bytes written.  While the writer keeps
that descriptor open the inode cannot be reused, so "the path still names my inode and it holds
my bytes" proves the lease on disk is the one it wrote; the bytes carry its fencing token, unique
to the grant.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Callable
from contextlib import suppress

from orc_git.handover import Head, parse_head_line
from orc_git.locking import lockyaml
from orc_git.locking.guard import O_CLOEXEC, O_NOFOLLOW, storage_error
from orc_git.locking.info import LockInfo

LOCK_NAME = "lock.yaml"
TMP_NAME = "lock.yaml.tmp"

LIVE, DEAD, RELEASED = lockyaml.LIVE, lockyaml.DEAD, lockyaml.RELEASED

Stamp = tuple[int, int, int]
"""inode, mtime_ns, size: what a waiter polls.  A write within the same tick of the filesystem's
clock as the one before may leave it unchanged (a release only rewrites the first line), which
is why waiters also judge the lease in full every quarter second (:mod:`orc_git.locking.wait`)."""
Written = tuple[int, int, bytes]  # the lease file kept open, its inode, the bytes written


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


def read(task_dir: str, task_id: str, heads: dict[str, Head] | None = None) -> LockInfo | None:
    """The lease as it is on disk, ``None`` when there is none; never raises for bad files.
    The head a tombstone recorded goes into ``heads`` when it is given."""
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
        raw = os.read(fd, lockyaml.MAX_BYTES + 1)
    except OSError as exc:
        return unreadable(task_id, exc.strerror or str(exc), path)
    finally:
        os.close(fd)
    if raw.startswith(RELEASED):
        if heads is not None:
            head = parse_head_line(raw)
            if head is not None:
                heads[task_id] = head
        return None
    try:
        info = lockyaml.parse(raw, task_id)
    except lockyaml.Unreadable as exc:
        return unreadable(task_id, str(exc), path, st.st_mtime)
    info.mtime = st.st_mtime
    return info


def fs_now(root: str) -> float:
    """The filesystem's clock: the mtime of a file created now beside the leases."""
    probe = f"{root}/.clock.{os.getpid()}.{threading.get_ident()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | O_CLOEXEC | O_NOFOLLOW
                     | os.O_NONBLOCK, 0o600)  # a planted FIFO: ENXIO, never a hang
        try:
            return os.fstat(fd).st_mtime
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError:
        return time.time()  # a read-only store: the local clock is all there is


def _write_all(fd: int, content: bytes) -> Written:
    if os.write(fd, content) != len(content):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return fd, os.fstat(fd).st_ino, content


def open_tombstone(task_dir: str) -> int | None:
    """Lock-free: the lease file opened for writing if it is a tombstone, else ``None``; a grant
    then writes over it without opening it again."""
    try:
        fd = os.open(f"{task_dir}/{LOCK_NAME}", os.O_RDWR | O_CLOEXEC | O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:  # what it is (a regular file?) is checked under the guard, by claim()
        if os.pread(fd, len(RELEASED), 0) == RELEASED:
            return fd
    except OSError:  # a directory, a FIFO
        pass
    os.close(fd)
    return None


def claim(task_dir: str, content: Callable[[bytes], bytes],
          tombstone: int | None = None) -> Written | None:
    """Under the guard: write a new lease if the task is free, over a tombstone in place or as a
    new file; ``None`` when a lease (or something else) is there.  ``tombstone`` is what
    :func:`open_tombstone` opened before the guard was taken; it is checked again here.
    ``content`` is given the tombstone's bytes (empty for a new file): the new lease carries
    on what its release recorded (the head it left)."""
    path = f"{task_dir}/{LOCK_NAME}"
    fd = tombstone
    if fd is None:
        try:
            fd = os.open(path, os.O_RDWR | O_CLOEXEC | O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return create(task_dir, content)
        except OSError:
            return None  # a symlink, a directory ...: the caller reads and judges it
    try:
        st = os.fstat(fd)
        # Still the file at the path (not one removed by hand and created afresh since), and
        # still a tombstone (no grant since it was opened)?
        old = b""
        free = (os.stat(path, follow_symlinks=False).st_ino == st.st_ino
                and stat.S_ISREG(st.st_mode)
                and (old := os.pread(fd, min(st.st_size, lockyaml.MAX_BYTES),
                                     0)).startswith(RELEASED))
    except OSError:
        free = False
    if not free:
        os.close(fd)
        return None if tombstone is None else claim(task_dir, content)
    try:
        data = content(old)
        assert data.startswith(LIVE)
        if os.pwrite(fd, data[len(LIVE):], len(LIVE)) != len(data) - len(LIVE):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if st.st_size > len(data):  # the last lease was longer
            os.ftruncate(fd, len(data))
        if os.pwrite(fd, LIVE, 0) != len(LIVE):  # the grant happens here
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return fd, st.st_ino, data
    except OSError as exc:
        with suppress(OSError):
            bury(fd)  # whatever was written, the task stays free
        os.close(fd)
        raise storage_error("write", path, exc) from None


def holds(task_dir: str, written: Written) -> bool:
    """Does the path still name the file written, holding just the bytes written?"""
    fd, ino, content = written
    try:
        if os.stat(f"{task_dir}/{LOCK_NAME}", follow_symlinks=False).st_ino != ino:
            return False
        return os.pread(fd, len(content) + 1, 0) == content
    except OSError:
        return False


def bury(fd: int, tail: bytes = b"", at: int = 0) -> None:
    """Release the open lease file in place: ``tail`` (what the release records) appended at
    ``at``, the lease's end, then one write of its first line.  A reader that catches the tail
    half written sees a live lease it cannot read, and looks again under the guard."""
    if tail and os.pwrite(fd, tail, at) != len(tail):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if os.pwrite(fd, DEAD, 0) != len(DEAD):
        raise OSError(errno.EIO, "short write")


def create(task_dir: str, content: Callable[[bytes], bytes]) -> Written | None:
    """Create the lease if there is none (``O_EXCL``); ``None`` when one exists.  ``content`` is
    called only once the file is ours, so a contender mints no fencing token."""
    path = f"{task_dir}/{LOCK_NAME}"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644)
    except FileExistsError:
        return None
    except OSError as exc:
        raise storage_error("create", path, exc) from None
    try:
        return _write_all(fd, content(b""))
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
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644)
        try:
            written = _write_all(fd, content)
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
        return written
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
