"""Opening what a repository brings without following it out, and without blocking on it.

A clone can carry symbolic links (``.orc/tasks -> ../../somewhere``) and a local file can be a
FIFO, which blocks whoever opens it for reading until a writer comes.  Inside a repository orc
never follows a link (``O_NOFOLLOW``; directories are checked with ``lstat`` once per command,
where :mod:`orc_git.repo` finds them), opens every file ``O_NONBLOCK`` and reads only regular
files.  ``$ORC_HOME`` is the user's own: links there are followed (dotfiles managers make them),
but a FIFO or a device is still refused.

Failures are ``OSError`` with a ``strerror`` that says what was met, so every caller keeps
raising its own error (ConfigError, StateUnreadable, StorageError) with a sentence a user reads.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)

LINK = "it is a symbolic link, and orc-git never follows links inside a repository"
NOT_REGULAR = "it is not a regular file (a FIFO, a device or a directory)"
NOT_DIRECTORY = "it is not a directory"


def _why(exc: OSError, follow: bool) -> OSError:
    if exc.errno == errno.ELOOP and not follow:
        return OSError(errno.ELOOP, LINK)
    return exc


def open_regular(path: str | os.PathLike[str], flags: int = os.O_RDONLY, *,
                 follow: bool = False, dir_fd: int | None = None, mode: int = 0o644) -> int:
    """``os.open`` that never blocks, follows a final link only with ``follow``, and returns
    only a regular file (else ``OSError`` saying what it is); the descriptor is the caller's."""
    flags |= O_NONBLOCK | O_CLOEXEC | (0 if follow else O_NOFOLLOW)
    try:
        fd = os.open(path, flags, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO opened for writing with no reader
            raise OSError(errno.ENXIO, NOT_REGULAR) from None
        raise _why(exc, follow) from None
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        os.close(fd)
        raise
    if not regular:
        os.close(fd)
        raise OSError(errno.EINVAL, NOT_REGULAR)
    return fd


def read_regular(path: str | os.PathLike[str], limit: int, *, follow: bool = False,
                 dir_fd: int | None = None) -> bytes | None:
    """Up to ``limit + 1`` bytes of a regular file (so callers can tell "too large"); ``None``
    when there is no file."""
    try:
        fd = open_regular(path, follow=follow, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    try:
        return read_fd(fd, limit)
    finally:
        os.close(fd)


def read_fd(fd: int, limit: int) -> bytes:
    chunks, size = [], 0
    while size <= limit:
        chunk = os.read(fd, limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def open_dir(path: str | os.PathLike[str], dir_fd: int | None = None) -> int:
    """A directory opened for ``dir_fd`` use; a link or anything else is refused."""
    try:
        return os.open(path, os.O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, LINK) from None
        if exc.errno == errno.ENOTDIR:
            what = LINK if os.path.islink(path) and dir_fd is None else NOT_DIRECTORY
            raise OSError(errno.ENOTDIR, what) from None
        raise


def real_dir_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be used as one of orc's directories (``None``: it is a real directory,
    or nothing is there yet).  One ``lstat``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc.strerror or str(exc)
    if stat.S_ISDIR(st.st_mode):
        return None
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return f"it is a symbolic link (to {target}), and orc-git never follows links inside a " \
               "repository"
    return NOT_DIRECTORY


def replace_file(path: str | os.PathLike[str], content: bytes, mode: int = 0o644) -> None:
    """Write ``path`` atomically: a new temporary file beside it (``O_EXCL``, never through a
    link) with ``mode``, renamed over it; a link at ``path`` is replaced, not written through.
    ``OSError`` on failure, the temporary file removed."""
    path = os.fspath(path)
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.orc-tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        try:
            if os.write(fd, content) != len(content):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def replace_at(dir_fd: int, name: str, content: bytes, mode: int = 0o644) -> None:
    """Write ``name`` in the open directory atomically: a new temporary file (``O_EXCL``, so a
    planted link or FIFO under its name is removed, never followed) renamed over it.  Whatever
    was at ``name`` (a link included) is replaced, not written through."""
    tmp = f"{name}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode,
                 dir_fd=dir_fd)
    try:
        try:
            if os.write(fd, content) != len(content):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
