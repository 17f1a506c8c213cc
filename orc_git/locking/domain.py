"""The p2p *lock domain*: one clone's lock directory, named by a random id kept beside it.

Fencing tokens count per task per lock directory, but ``state.yaml`` travels through git, so a
token recorded in another clone says nothing about this clone's holders.  The id, in
``.orc/local/lock-domain`` of the main worktree (every worktree of the clone shares it; git ignores
``.orc/local/`` in every repository ``orc init`` set up, so it is never committed), is recorded
with each token, and tokens are only compared within one domain.  ``git clean -fdX`` removes it
with the fences: the tokens that start again from 1 are then a new domain's.

It is created once: written to a temporary file, synced, and hard-linked into place, so two
processes racing to create it agree on the one that got there first, and a reader never sees it
half written.  Read without following a symbolic link, without blocking on a FIFO, a regular file
only.  Lockers read it once and keep it (:class:`orc_git.locking.filelocker.FileLocker`).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from contextlib import suppress

from orc_git.errors import StorageError
from orc_git.locking.guard import FENCE_NAME, O_CLOEXEC, O_NOFOLLOW

DOMAIN_NAME = "lock-domain"
_ID = re.compile(rb"[0-9a-f]{32}\n?")
_DIR_FLAGS = os.O_RDONLY | O_CLOEXEC | O_NOFOLLOW | getattr(os, "O_DIRECTORY", 0)


def _refuse(path: str, why: str) -> StorageError:
    return StorageError(f"{path}: {why}; remove it to begin a new lock domain (fencing tokens "
                        "recorded under the old one are then no longer compared)")


def _open_dir(local_dir: str) -> int:
    try:
        os.makedirs(local_dir, exist_ok=True)
        return os.open(local_dir, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST):
            raise StorageError(f"{local_dir} is not a directory (a symbolic link?); orc-git "
                               "keeps the clone's lock domain there and will not follow it") \
                from None
        raise StorageError(f"cannot open {local_dir}: {exc.strerror}") from None


def _read(dir_fd: int, path: str) -> str | None:
    """The id, or None when there is no file yet."""
    try:
        fd = os.open(DOMAIN_NAME, os.O_RDONLY | O_CLOEXEC | O_NOFOLLOW | os.O_NONBLOCK,
                     dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse(path, "it is a symbolic link (never followed)") from None
        raise StorageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _refuse(path, "it is not a regular file")
        raw = os.read(fd, 64)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if not _ID.fullmatch(raw):
        raise _refuse(path, "it does not hold a lock domain id (32 hex digits)")
    return raw[:32].decode("ascii")


def _create(dir_fd: int, path: str) -> None:
    """Write a new id under a private name and link it into place; losing the race is fine."""
    tmp = f"{DOMAIN_NAME}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644,
                     dir_fd=dir_fd)
        try:
            content = os.urandom(16).hex().encode("ascii") + b"\n"
            if os.write(fd, content) != len(content):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(fd)
        finally:
            os.close(fd)
        with suppress(FileExistsError):  # another process created it first: theirs stands
            os.link(tmp, DOMAIN_NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd,
                    follow_symlinks=False)
        with suppress(OSError):
            os.fsync(dir_fd)
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror}") from None
    finally:
        with suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)


def load(local_dir: str) -> str:
    """This clone's lock domain id, created on first use."""
    path = f"{local_dir}/{DOMAIN_NAME}"
    dir_fd = _open_dir(local_dir)
    try:
        domain = _read(dir_fd, path)
        if domain is None:
            _create(dir_fd, path)
            domain = _read(dir_fd, path)
        if domain is None:
            raise StorageError(f"cannot create {path}: it vanished as it was created")
        return domain
    finally:
        os.close(dir_fd)


def granted(task_dir: str) -> int:
    """How many tokens this clone has granted for a task: its fence's size (0 without one)."""
    try:
        st = os.stat(f"{task_dir}/{FENCE_NAME}", follow_symlinks=False)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise StorageError(f"cannot read {task_dir}/{FENCE_NAME}: {exc.strerror}") from None
    return st.st_size if stat.S_ISREG(st.st_mode) else 0
