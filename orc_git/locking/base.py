"""The Locker interface of the spec, and the two lockers that need no storage of their own."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from orc_git.errors import LockerUnavailable
from orc_git.locking.info import Answer, LockInfo
from orc_git.taskid import check_task_id

log = logging.getLogger("orc_git.lock")


@runtime_checkable
class Locker(Protocol):
    """Acquire raises :class:`~orc_git.errors.LockHeld`; release and heartbeat raise
    :class:`~orc_git.errors.NotOwner` or :class:`~orc_git.errors.LeaseLost`; a locker that cannot
    reach its store raises :class:`~orc_git.errors.LockerUnavailable` (the only error a
    :class:`CompositeLocker` falls back on)."""

    name: str

    def acquire(self, task_id: str, *, ttl: int | None = None, force: bool = False) -> LockInfo: ...

    def release(self, task_id: str, *, force: bool = False) -> bool: ...

    def heartbeat(self, task_id: str) -> LockInfo: ...

    def is_locked(self, task_id: str) -> LockInfo: ...

    def list_locks(self) -> list[LockInfo]: ...

    def clean(self) -> list[LockInfo]: ...


@runtime_checkable
class PerProcessLocker(Protocol):
    """A locker that can act for another holder process: ``orc lock acquire`` holds the lease
    for the shell that ran it (its parent), which later ``orc lock`` commands renew and release.
    ``Context.locker(pid)`` asks the mode's locker for it."""

    def for_pid(self, pid: int) -> Locker: ...


@runtime_checkable
class ReportsAnswer(Protocol):
    """A locker that says where its last answer (to the calling thread) came from.  Optional: a
    locker without it is reported by its ``name`` (:func:`answer_of`)."""

    @property
    def answer(self) -> Answer: ...


def answer_of(locker: Locker) -> Answer:
    """Where ``locker``'s last answer came from (what read commands print beside it)."""
    answer = getattr(locker, "answer", None)
    return answer if isinstance(answer, Answer) else Answer(locker.name)


# Optional locker members (a third-party locker may lack them; these helpers then say None):
#   answer -> Answer: where its last answer came from (ReportsAnswer above; answer_of reads it)
#   lock_domain(task_id) -> str | None: where the tokens of this locker's leases of the task count
#   tokens_granted(task_id, lock_domain) -> int | None: how many tokens that domain has granted
#     for the task, when this locker can tell (the file lease: its fence).
#   can_force(task_id) -> bool | None: whether this holder may take the task from a live holder
#     (the team server lets only admins force); None when it cannot tell.


def lock_domain_of(locker: Locker, task_id: str) -> str | None:
    """The lock domain a state write under ``locker``'s leases of ``task_id`` is fenced in."""
    call: Callable[[str], str | None] | None = getattr(locker, "lock_domain", None)
    return call(task_id) if call is not None else None


def tokens_granted(locker: Locker, task_id: str, lock_domain: str | None) -> int | None:
    call: Callable[[str, str | None], int | None] | None = getattr(locker, "tokens_granted",
                                                                   None)
    return call(task_id, lock_domain) if call is not None else None


def can_force(locker: Locker, task_id: str) -> bool | None:
    """Whether a forced acquire of ``task_id`` can be granted to ``locker``'s holder: the
    conflict prompt offers force only when this is not False."""
    call: Callable[[str], bool | None] | None = getattr(locker, "can_force", None)
    return call(task_id) if call is not None else None


class NoOpLocker:
    """Solo mode: every acquire succeeds, nothing is written, nothing heavy is imported."""

    name = "noop"
    answer = Answer("none")

    def acquire(self, task_id: str, *, ttl: int | None = None, force: bool = False) -> LockInfo:
        return LockInfo(check_task_id(task_id), mine=True)

    def release(self, task_id: str, *, force: bool = False) -> bool:
        check_task_id(task_id)
        return False

    def heartbeat(self, task_id: str) -> LockInfo:
        return LockInfo(check_task_id(task_id), mine=True)

    def is_locked(self, task_id: str) -> LockInfo:
        return LockInfo(check_task_id(task_id))

    def list_locks(self) -> list[LockInfo]:
        return []

    def clean(self) -> list[LockInfo]:
        return []

    def lock_domain(self, task_id: str) -> str | None:
        return None  # solo: no tokens, nothing to fence


class CompositeLocker:
    """A primary locker (the team server) that falls back to another (the file lease) only when
    the primary cannot be reached; a refusal from the primary is a refusal.  Release and heartbeat
    go to whichever locker granted the lease."""

    name = "composite"
    primary_label = "the lock server"
    """How warnings name the primary (the team locker: "the team server")."""

    def __init__(self, primary: Locker, fallback: Locker) -> None:
        self.primary = primary
        self.fallback = fallback
        self._granted_by: dict[str, Locker] = {}
        self._answers = threading.local()  # the heartbeat thread's answers are not the CLI's

    # -- where answers come from ---------------------------------------------------------

    @property
    def answer(self) -> Answer:
        answer = getattr(self._answers, "last", None)
        return answer if isinstance(answer, Answer) else answer_of(self.primary)

    def _from(self, locker: Locker) -> None:
        """The next answer is ``locker``'s (the fallback's: a lease it granted, not a guess)."""
        self._answers.last = (Answer("file-fallback") if locker is self.fallback
                              else answer_of(locker))

    def _fell_back(self, exc: LockerUnavailable, what: str = "this answer comes from") -> None:
        """Say (in :attr:`answer`) that the next answer is the fallback's, and what it misses."""
        self._answers.last = Answer("file-fallback", (
            f"{self.primary_label} is unreachable ({exc.message}): {what} this clone's file "
            f"leases only; locks held on {self.primary_label} cannot be seen while it is "
            "unreachable",))

    def _route(self, task_id: str) -> Locker:
        return self._granted_by.get(task_id, self.primary)

    def acquire(self, task_id: str, *, ttl: int | None = None, force: bool = False) -> LockInfo:
        try:
            self._from(self.primary)
            info = self.primary.acquire(task_id, ttl=ttl, force=force)
            self._granted_by[task_id] = self.primary
        except LockerUnavailable as exc:
            log.warning("%s: lock server unavailable (%s); using the file lease", task_id,
                        exc.message)
            self._fell_back(exc, "granted or refused by")
            info = self.fallback.acquire(task_id, ttl=ttl, force=force)
            self._granted_by[task_id] = self.fallback
        return info

    def release(self, task_id: str, *, force: bool = False) -> bool:
        locker = self._granted_by.pop(task_id, None)
        if locker is not None:
            self._from(locker)
            return locker.release(task_id, force=force)
        try:
            self._from(self.primary)
            return self.primary.release(task_id, force=force)
        except LockerUnavailable as exc:
            self._fell_back(exc, "released from")
            return self.fallback.release(task_id, force=force)

    def heartbeat(self, task_id: str) -> LockInfo:
        locker = self._route(task_id)
        self._from(locker)
        return locker.heartbeat(task_id)

    def lock_domain(self, task_id: str) -> str | None:
        """The domain of whichever locker holds this process's lease, else the primary's (the
        fallback's when the primary cannot be reached)."""
        locker = self._granted_by.get(task_id)
        if locker is not None:
            return lock_domain_of(locker, task_id)
        try:
            return lock_domain_of(self.primary, task_id)
        except LockerUnavailable:
            return lock_domain_of(self.fallback, task_id)

    def tokens_granted(self, task_id: str, lock_domain: str | None) -> int | None:
        for locker in (self.fallback, self.primary):  # the file lease's answer costs a stat
            try:
                granted = tokens_granted(locker, task_id, lock_domain)
            except LockerUnavailable:
                continue
            if granted is not None:
                return granted
        return None

    def _read(self, call: Callable[[Locker], list[LockInfo]]) -> list[LockInfo]:
        """A read from the primary, else the fallback's; :attr:`answer` says which (the CLI
        prints its warning: a waiter polling is_locked must not log one line per poll)."""
        try:
            self._from(self.primary)
            return call(self.primary)
        except LockerUnavailable as exc:
            self._fell_back(exc)
            return call(self.fallback)

    def is_locked(self, task_id: str) -> LockInfo:
        return self._read(lambda locker: [locker.is_locked(task_id)])[0]

    def list_locks(self) -> list[LockInfo]:
        return self._read(lambda locker: locker.list_locks())

    def clean(self) -> list[LockInfo]:
        return self._read(lambda locker: locker.clean())
