"""Committed task state: ``task.yaml`` says what a task is, ``state.yaml`` where its run stands.

Both live in the *current* worktree's ``.orc/tasks/<TASK>/`` and travel through git; they are the
eventually consistent view others see after they pull.  Writes are fenced: a write made under a
lease records the lease's token, and a write carrying a token older than the one recorded is
refused, so a holder that lost its lease cannot overwrite its successor's state.  Writes take the
task's lease guard (p2p, team) so that check and write are one step, and replace the file
atomically.  Both files use :mod:`orc_git.flatyaml`, so hooks read them without PyYAML.

Tokens count per *lock domain* (one clone's lock directory, or one team server), and the state
travels through git: so the token is recorded with its ``lock_domain``, and a write is refused
only by a newer token of its own domain (:func:`fenced_out`).
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from orc_git import flatyaml, safefs
from orc_git.errors import (
    InvalidInput,
    LockHeld,
    StaleToken,
    StateUnreadable,
    StorageError,
    UnsafePath,
)
from orc_git.locking.info import parse_rfc3339, readable_time, rfc3339
from orc_git.taskid import check_task_id

if TYPE_CHECKING:
    from orc_git.context import Context
    from orc_git.lease import Lease
    from orc_git.locking.base import Locker

STATUSES = ("created", "running", "paused", "blocked", "completed", "failed")
MAX_BYTES = 64 * 1024
MAX_TEXT = 1000
"""The longest text field (phase, title, names) a state or task file may hold."""
STATE_NAME = "state.yaml"
TASK_NAME = "task.yaml"
LOCK_DOMAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")


class TaskDef(NamedTuple):
    id: str
    title: str
    created_by: str
    created_at: str


class TaskState(NamedTuple):
    task_id: str
    status: str
    phase: str | None
    iteration: int | None
    updated_at: str
    updated_by: str
    host: str
    token: int | None
    lock_domain: str | None = None  # where ``token`` counts; None: no token, or an older orc's

    def to_json(self) -> dict[str, Any]:
        return self._asdict()

    def age(self, now: float | None = None) -> float | None:
        t = parse_rfc3339(self.updated_at)
        return None if t is None else (time.time() if now is None else now) - t

    def summary(self) -> str:
        where = [self.status]
        if self.phase:
            where.append(f"phase {self.phase}")
        if self.iteration is not None:
            where.append(f"iteration {self.iteration}")
        return (f"{', '.join(where)} by {self.updated_by}@{self.host} at "
                f"{readable_time(self.updated_at)}")


def _text(data: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise ValueError(f"{key} must be a non-empty string")
    return value


def _count(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 62:
        raise ValueError(f"{key} must be a non-negative integer")
    return value


def _check_text(name: str, value: str | None, empty_ok: bool = False) -> None:
    """What orc writes it must read back, and show as written: text fields are at most
    :data:`MAX_TEXT` printable characters (no newline, control, bidi or surrogate)."""
    if value is None or (empty_ok and value == ""):
        return
    if not value or len(value) > MAX_TEXT or not value.isprintable():
        raise InvalidInput(f"{name} must be 1 to {MAX_TEXT} printable characters (no newline, "
                           f"control, format or surrogate characters): got "
                           f"{value[:80]!r}" + ("…" if len(value) > 80 else ""))


def _domain(data: dict[str, Any]) -> str | None:
    value = data.get("lock_domain")
    if value is None:
        return None
    if not isinstance(value, str) or not LOCK_DOMAIN.fullmatch(value):
        raise ValueError("lock_domain must be 1-100 letters, digits and ._:- "
                         "(an id orc-git recorded)")
    return value


def parse_state(raw: bytes, task_id: str, where: str = "state.yaml") -> TaskState:
    """Decode a ``state.yaml``; every way it can be bad is one StateUnreadable naming the file."""
    try:
        data = flatyaml.load(raw, MAX_BYTES)
        status = _text(data, "status")
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        state = TaskState(
            task_id=_text(data, "task_id") or "", status=status,
            phase=_text(data, "phase", required=False),
            iteration=_count(data, "iteration"),
            updated_at=_text(data, "updated_at") or "", updated_by=_text(data, "updated_by") or "",
            host=_text(data, "host") or "", token=_count(data, "token"),
            lock_domain=_domain(data))
    except (flatyaml.NotFlatYaml, ValueError) as exc:
        raise StateUnreadable(f"{where} is unreadable: {exc}") from None
    if state.task_id != task_id:
        raise StateUnreadable(f"{where} names task {state.task_id!r}, not {task_id!r}")
    return state


def _read_bytes(path: Path | str, dir_fd: int | None = None, shown: str | None = None
                ) -> bytes | None:
    """A state or task file, never through a link, never blocking on a FIFO."""
    try:
        return safefs.read_regular(path, MAX_BYTES, dir_fd=dir_fd)
    except OSError as exc:
        raise StateUnreadable(f"{shown or path} is unreadable: {exc.strerror or exc}") from None


def _open_task_dir(tasks_dir: Path | str, task_id: str) -> int | None:
    """The task's directory, opened so that its files are read and written inside it even if
    a link was put in its place (``None`` when there is none)."""
    path = f"{tasks_dir}/{task_id}"
    try:
        return safefs.open_dir(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnsafePath(f"{path}: {exc.strerror or exc}") from None


def _read_state_at(dir_fd: int, shown: str, task_id: str) -> TaskState | None:
    raw = _read_bytes(STATE_NAME, dir_fd, shown)
    return None if raw is None else parse_state(raw, task_id, shown)


def read_state(tasks_dir: Path | str, task_id: str) -> TaskState | None:
    check_task_id(task_id)
    fd = _open_task_dir(tasks_dir, task_id)
    if fd is None:
        return None
    try:
        return _read_state_at(fd, f"{tasks_dir}/{task_id}/{STATE_NAME}", task_id)
    finally:
        os.close(fd)


def read_task(tasks_dir: Path, task_id: str) -> TaskDef | None:
    path = tasks_dir / check_task_id(task_id) / TASK_NAME
    fd = _open_task_dir(tasks_dir, task_id)
    if fd is None:
        return None
    try:
        raw = _read_bytes(TASK_NAME, fd, str(path))
    finally:
        os.close(fd)
    if raw is None:
        return None
    try:
        data = flatyaml.load(raw, MAX_BYTES)
        return TaskDef(_text(data, "id") or "", str(data.get("title") or ""),
                       _text(data, "created_by") or "", _text(data, "created_at") or "")
    except (flatyaml.NotFlatYaml, ValueError) as exc:
        raise StateUnreadable(f"{path} is unreadable: {exc}") from None


def _write(dir_fd: int, shown: Path, content: bytes) -> None:
    """Replace one file of an open task directory atomically (a link there is replaced, never
    written through)."""
    try:
        safefs.replace_at(dir_fd, shown.name, content)
    except OSError as exc:
        raise StorageError(f"cannot write {shown}: {exc.strerror or exc}") from None


def _dump_state(state: TaskState) -> bytes:
    return flatyaml.dump(state._asdict().items(), keep_none=True)


def create_task(ctx: Context, task_id: str, title: str = "") -> tuple[TaskDef, TaskState]:
    tasks_dir = ctx.repo.tasks_dir
    task_dir = tasks_dir / check_task_id(task_id)
    _check_text("title", title, empty_ok=True)
    try:
        tasks_dir.mkdir(parents=True, exist_ok=True)  # under real directories (RepoPaths.check)
        with suppress(FileExistsError):
            task_dir.mkdir()
    except OSError as exc:
        raise StorageError(f"cannot create {task_dir}: {exc.strerror}") from None
    fd = _open_task_dir(tasks_dir, task_id)
    if fd is None:
        raise StorageError(f"cannot create {task_dir}: it vanished while being created")
    try:
        try:
            st = os.stat(TASK_NAME, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISREG(st.st_mode):
                why = safefs.LINK if stat.S_ISLNK(st.st_mode) else safefs.NOT_REGULAR
                raise UnsafePath(f"{task_dir / TASK_NAME}: {why}")
            raise InvalidInput(f"task {task_id} already exists ({task_dir / TASK_NAME})")
        ident = ctx.identity
        now = rfc3339(time.time())
        task = TaskDef(task_id, title, ident.user, now)
        state = TaskState(task_id, "created", None, None, now, ident.user, ident.host, None)
        _write(fd, task_dir / TASK_NAME, flatyaml.dump(task._asdict().items(), keep_none=True))
        _write(fd, task_dir / STATE_NAME, _dump_state(state))
    finally:
        os.close(fd)
    return task, state


def write_state(ctx: Context, task_id: str, *, status: str | None = None,
                phase: str | None = None, iteration: int | None = None,
                token: int | None = None, force: bool = False,
                holder_pid: int | None = None, lock_domain: str | None = None) -> TaskState:
    """Change a task's state. ``token`` is the writer's lease token; when None, the lease this
    user holds on this host supplies it, and a lease held by another holder refuses the write
    unless ``force``.  ``holder_pid`` names the lease's holding process (the CLI's parent).
    ``lock_domain`` is where ``token`` counts (a lease's ``domain``); by default the locker's."""
    from orc_git.locking.base import lock_domain_of  # not on the git hooks' path

    check_task_id(task_id)
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    _check_text("phase", phase)
    if ctx.mode == "solo":
        return _write_state(ctx, None, task_id, status, phase, iteration, token, None, force)
    locker = ctx.locker(holder_pid)
    guard = getattr(locker, "guarded", None)
    if token is None:
        lease = locker.is_locked(task_id)
        if lease.locked and not lease.stale:
            if not lease.mine and not force:
                raise LockHeld(f"{task_id} is locked by {lease.who()}; its state belongs to "
                               "that holder (use --force to write anyway)", lease)
            if lease.mine:
                token, lock_domain = lease.token, lock_domain or lease.lock_domain
    if token is not None and lock_domain is None:
        lock_domain = lock_domain_of(locker, task_id)
    if guard is None:
        return _write_state(ctx, locker, task_id, status, phase, iteration, token, lock_domain,
                            force)
    with guard(task_id):
        return _write_state(ctx, locker, task_id, status, phase, iteration, token, lock_domain,
                            force)


def fenced_out(task_id: str, current: TaskState, token: int | None, lock_domain: str | None,
               granted: Callable[[], int | None]) -> bool:
    """Must a write with ``token`` (counted in ``lock_domain``) be refused over ``current``?

    A token fences only tokens of its own domain: a state recorded in another domain (another
    clone, another team server), or by an orc-git that recorded no domain, refuses nobody.  Within
    the domain an older token is refused, unless the recorded one is above every token the domain
    has granted for the task (``granted()``, known for this clone's file leases): the fence was
    reset since, so the recorded token says nothing about the tokens counted afresh.
    """
    if token is None or current.token is None or token >= current.token:
        return False
    if current.lock_domain is None or current.lock_domain != lock_domain:
        return False
    count = granted()
    if count is not None and current.token > count:
        import logging  # only here: the git hooks read states and must not import it

        logging.getLogger("orc_git.state").warning(
            "%s: token %s is recorded, but this clone has granted only %s token(s) for the task "
            "(was its lock.fence reset?): it cannot fence token %s, the write goes ahead",
            task_id, current.token, count, token)
        return False
    return True


def _write_state(ctx: Context, locker: Locker | None, task_id: str, status: str | None,
                 phase: str | None, iteration: int | None, token: int | None,
                 lock_domain: str | None, force: bool) -> TaskState:
    tasks_dir = ctx.repo.tasks_dir
    fd = _open_task_dir(tasks_dir, task_id)
    try:
        shown = tasks_dir / task_id / STATE_NAME
        current = None if fd is None else _read_state_at(fd, str(shown), task_id)
        return _write_state_at(ctx, locker, fd, shown, task_id, current, status, phase,
                               iteration, token, lock_domain, force)
    finally:
        if fd is not None:
            os.close(fd)


def _write_state_at(ctx: Context, locker: Locker | None, fd: int | None, shown: Path,
                    task_id: str, current: TaskState | None, status: str | None,
                    phase: str | None, iteration: int | None, token: int | None,
                    lock_domain: str | None, force: bool) -> TaskState:
    from orc_git.locking.base import tokens_granted  # not on the git hooks' path

    if fd is None or current is None:
        raise InvalidInput(f"task {task_id} has no {STATE_NAME}: create it with "
                           f"`orc task new {task_id}`")
    if not force and locker is not None and fenced_out(
            task_id, current, token, lock_domain,
            lambda: tokens_granted(locker, task_id, lock_domain)):
        raise StaleToken(f"{task_id}: refusing a state write with fencing token {token}: "
                         f"token {current.token} was recorded since (by "
                         f"{current.updated_by}@{current.host}); this writer lost its lease")
    ident = ctx.identity
    keep = token is None  # a write without a token leaves the recorded token and its domain
    new = TaskState(task_id, status or current.status,
                    phase if phase is not None else current.phase,
                    iteration if iteration is not None else current.iteration,
                    rfc3339(time.time()), ident.user, ident.host,
                    current.token if keep else token,
                    current.lock_domain if keep else lock_domain)
    _write(fd, shown, _dump_state(new))
    return new


def iter_states(tasks_dir: Path, mentioning: bytes | None = None
                ) -> list[tuple[str, TaskState | StateUnreadable]]:
    """Every task's state in a worktree, unreadable ones included as their error.  With
    ``mentioning``, only files containing those bytes are parsed (hooks look for b"running"
    among a thousand states and parse the few that match)."""
    out: list[tuple[str, TaskState | StateUnreadable]] = []
    try:
        names = sorted(e.name for e in os.scandir(tasks_dir) if e.is_dir(follow_symlinks=False))
    except OSError:
        return out
    for name in names:
        try:
            if mentioning is not None:
                # scandir said a directory, not a link: read by path, and parse what was read
                path = f"{tasks_dir}/{name}/{STATE_NAME}"
                raw = _read_bytes(path)
                if raw is None or mentioning not in raw:
                    continue
                state: TaskState | None = parse_state(raw, check_task_id(name), path)
            else:
                state = read_state(tasks_dir, name)
        except StateUnreadable as exc:
            out.append((name, exc))
        except InvalidInput:
            continue
        else:
            if state is not None:
                out.append((name, state))
    return out


def set_state(task_id: str, *, lease: Lease | None = None, status: str | None = None,
              phase: str | None = None, iteration: int | None = None,
              repo: str | os.PathLike[str] | None = None) -> TaskState:
    """The executor's call: record a task's state under the lease it holds (its token fences
    the write).  ``orc_git.set_state(task, lease=lease, status="running", phase="test")``."""
    from orc_git.context import default_context

    return write_state(default_context(repo), task_id, status=status, phase=phase,
                       iteration=iteration, token=lease.token if lease is not None else None,
                       lock_domain=lease.domain if lease is not None else None)
