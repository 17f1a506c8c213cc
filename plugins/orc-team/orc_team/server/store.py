"""What the server keeps across restarts, behind a small interface.

Lock decisions are made *inside* the store (compare-and-set in one transaction), not in the
server's memory: that is what lets a restart keep every lease and every fencing counter, and what a
Redis store shared by several server processes will need (a Lua script per method).  The methods
are async for that future store; the SQLite one does its short transactions inline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Outcome = Literal["acquired", "extended", "stolen", "held"]


@dataclass(frozen=True)
class ClientInstance:
    """One client instance of one user (the token's user and the connection's client id): who
    holds a lock, and who publishes.  The same user's second machine is another instance.  Not
    the core's :class:`orc_git.identity.Holder` (a local process holding a file lease)."""

    user: str
    client: str
    name: str | None = None
    email: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.user, self.client)


@dataclass(frozen=True)
class LockRecord:
    task_id: str
    holder: ClientInstance
    token: int
    ttl: int
    acquired_at: float
    heartbeat_at: float
    expires_at: float
    project_id: str | None = None

    def held_by(self, holder: ClientInstance) -> bool:
        return self.holder.key == holder.key


@dataclass(frozen=True)
class Grant:
    """The answer to an acquire.  ``lock`` is the lock now in force (the caller's unless
    ``outcome`` is ``held``); ``expired`` / ``stolen`` is the lease it replaced.  ``offset`` is
    the project's event offset for announcing a grant or steal, taken in the grant's own
    transaction (None without a project): announcing then costs no second commit."""

    outcome: Outcome
    lock: LockRecord
    expired: LockRecord | None = None
    stolen: LockRecord | None = None
    offset: int | None = None

    @property
    def granted(self) -> bool:
        return self.outcome != "held"


@dataclass(frozen=True)
class Release:
    """``released`` tells whether ``lock`` was removed; when False, ``lock`` is someone else's
    live lease (or None: nothing was held).  ``expired`` is a dead lease cleared on the way;
    ``offset`` is taken for announcing the release, as in :class:`Grant`."""

    released: bool
    lock: LockRecord | None
    expired: LockRecord | None = None
    offset: int | None = None


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    project_id: str | None
    state: dict[str, Any] = field(default_factory=dict)
    fence: int = 0


class ProjectMismatch(Exception):
    """An event names another project than the one its task belongs to (issue 8, point 11):
    a task's events are bound to the first project the server saw it under."""

    def __init__(self, task_id: str, project_id: str | None) -> None:
        super().__init__(f"{task_id} belongs to project {project_id}")
        self.task_id = task_id
        self.project_id = project_id


class Store(Protocol):
    domain: str
    """The store's lock domain: a random id made once when the store is created and kept with
    it.  Its fencing tokens count in it, so a client records it beside the token, and tokens of
    another store (another server, or a store made afresh) are never compared with these."""

    async def acquire(self, task_id: str, holder: ClientInstance, ttl: int, now: float, *,
                      steal: bool = False, project_id: str | None = None) -> Grant:
        """Grant, extend (same holder: heartbeat), steal (``steal``) or refuse.  Every grant and
        steal takes the next fencing token of the task; an extension keeps its token."""
        ...

    async def release(self, task_id: str, holder: ClientInstance | None, now: float) -> Release:
        """Remove the holder's lease (any lease when ``holder`` is None: a forced release)."""
        ...

    async def get_lock(self, task_id: str, now: float) -> LockRecord | None: ...

    async def list_locks(self, now: float) -> list[LockRecord]: ...

    async def expire(self, now: float) -> list[LockRecord]:
        """Remove and return every lease whose ``expires_at`` has passed."""
        ...

    async def get_task(self, task_id: str) -> TaskRecord | None: ...

    async def project_tasks(self, project_id: str) -> list[TaskRecord]: ...

    async def record_event(self, task_id: str, project_id: str | None,
                           state: dict[str, Any]) -> tuple[int | None, TaskRecord]:
        """Make the task known, merge ``state`` into its current state, and take the next event
        offset of the task's project (None while it has none).  ``project_id`` None means the
        task's own project; another project than the task's raises ProjectMismatch, with
        nothing changed."""
        ...

    async def next_offset(self, project_id: str) -> int: ...

    async def last_offset(self, project_id: str) -> int: ...

    async def close(self) -> None: ...
