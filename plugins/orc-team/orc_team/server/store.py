"""What the server keeps across restarts, behind a small interface.

Lock decisions are made *inside* the store (compare-and-set in one transaction), not in the
server's memory: that is what lets a restart keep every lease and every fencing counter, and what a
Redis store shared by several server processes will need (a Lua script per method).  The methods
are async for that future store; the SQLite one does its short transactions inline.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from orc_team.protocol import HeadData, Resource, encode

Outcome = Literal["acquired", "extended", "stolen", "held"]


def stored_head(text: str | bytes | None) -> HeadData | None:
    """A task's last head as a store kept it (JSON written at a release), or None: none kept, or
    text that is not one (a store's data is read, never trusted to be well-formed)."""
    try:
        head = json.loads(text) if text else None
    except ValueError:
        return None
    if isinstance(head, dict) and isinstance(head.get("commit"), str):
        return head  # type: ignore[return-value]  # a release's head, as written
    return None


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
    expired_offset: int | None = None
    """The offset for announcing ``expired``, taken just before ``offset``: subscribers see the
    old lease expire, then the new grant, in offset order."""
    last_head: HeadData | None = None
    """The head the task's last release recorded, read with the decision (any outcome)."""

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
    last_head: HeadData | None = None
    """After a release: the head it recorded, or the one kept from before."""


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    project_id: str | None
    state: dict[str, Any] = field(default_factory=dict)
    fence: int = 0


@dataclass(frozen=True)
class KeptEvent:
    """A server event (lock.*) as announced: kept by the store with the lock change it
    announces, in the same transaction, when it has a project (and so an offset).  ``fields``
    is the stamped event but its ``event_id``; the id and the encoded event are made when
    first needed: most lock changes have no project and no audience, and then neither is."""

    project_id: str | None
    offset: int | None
    fields: dict[str, Any]

    @functools.cached_property
    def event_id(self) -> str:
        return str(uuid.uuid4())

    @functools.cached_property
    def data(self) -> bytes:
        return encode({"event_id": self.event_id, **self.fields})


Announce = Callable[[Any], Sequence[KeptEvent]]
"""Called by the store with the :class:`Grant` or :class:`Release` it is about to commit (a
grant, steal or release, not an extension or a refusal): the events announcing it, which the
store keeps in that transaction.  The caller sends them once the store has returned.  A store
shared by several processes may call it again when the decision changed before it could commit:
only the last call's events count."""


@dataclass(frozen=True)
class NewEvent:
    """A published event for the store to keep: ``data`` is the stamped event whose
    ``project_id`` and ``offset`` the store fills in (the task's project, the project's next
    offset); ``state`` is what it says about the task's current state."""

    event_id: str
    task_id: str
    project_id: str | None
    state: dict[str, Any]
    data: dict[str, Any]


@dataclass(frozen=True)
class Recorded:
    """A kept event: ``data`` is its stamped JSON (UTF-8 bytes, sent as is).  ``duplicate``:
    the store already had this ``event_id`` and nothing was changed; ``stored`` is then the
    stored event, parsed, whose stamps the ack repeats."""

    event_id: str
    project_id: str | None
    offset: int | None
    epoch: str | None
    data: bytes
    duplicate: bool = False
    stored: dict[str, Any] | None = None


@dataclass(frozen=True)
class Stream:
    """A project's event stream: its ``epoch`` (a random id made with the stream, so offsets of
    a wiped or replaced store are never mistaken for these), its last offset, and the offset
    of its oldest kept event (``last_offset + 1`` when none is kept)."""

    epoch: str
    last_offset: int
    oldest_offset: int


class ProjectMismatch(Exception):
    """An event names another project than the one its task belongs to (issue 8, point 11):
    a task's events are bound to the first project the server saw it under."""

    def __init__(self, task_id: str, project_id: str | None) -> None:
        super().__init__(f"{task_id} belongs to project {project_id}")
        self.task_id = task_id
        self.project_id = project_id


class VersionConflict(Exception):
    """A resource put against a version that is not the current one (or a create, version 0,
    of a resource that exists): nothing was written.  ``current`` is the whole current
    version."""

    def __init__(self, current: Resource, expected: int) -> None:
        super().__init__(f"{current.resource_id} is at version {current.version}, not "
                         f"{expected}")
        self.current = current
        self.expected = expected


class StoreUnavailable(Exception):
    """The store cannot be reached (a Redis store whose Redis is down): the request is answered
    UNAVAILABLE, never INTERNAL, and the server carries on until the store answers again."""


class NoSuchResource(Exception):
    """A put with ``expected_version`` above 0 for a resource that has no version at all."""


AnnounceResource = Callable[[Resource, int | None], KeptEvent]
"""Builds the ``resource.updated`` event for a new version and its project offset (None
without a project); the store keeps it in the put's transaction."""


class Store(Protocol):
    domain: str
    """The store's lock domain: a random id made once when the store is created and kept with
    it.  Its fencing tokens count in it, so a client records it beside the token, and tokens of
    another store (another server, or a store made afresh) are never compared with these."""
    events_kept: int
    """At least this many of each project's latest events are kept for replay."""

    async def acquire(self, task_id: str, holder: ClientInstance, ttl: int, now: float, *,
                      steal: bool = False, project_id: str | None = None,
                      announce: Announce | None = None) -> Grant:
        """Grant, extend (same holder: heartbeat), steal (``steal``) or refuse.  Every grant and
        steal takes the next fencing token of the task; an extension keeps its token."""
        ...

    async def release(self, task_id: str, holder: ClientInstance | None, now: float, *,
                      head: HeadData | None = None, announce: Announce | None = None
                      ) -> Release:
        """Remove the holder's lease (any lease when ``holder`` is None: a forced release) and,
        when it is removed, keep ``head`` as the task's last head in the same transaction (a
        grant anywhere after it reads the new head; None keeps the head there was)."""
        ...

    async def get_lock(self, task_id: str, now: float) -> LockRecord | None: ...

    async def last_head(self, task_id: str) -> HeadData | None:
        """The task's last head, or None when no release recorded one."""
        ...

    async def list_locks(self, now: float) -> list[LockRecord]: ...

    async def expire(self, now: float) -> list[LockRecord]:
        """Remove and return every lease whose ``expires_at`` has passed."""
        ...

    async def get_task(self, task_id: str) -> TaskRecord | None: ...

    async def project_tasks(self, project_id: str) -> list[TaskRecord]: ...

    async def record_events(self, events: Sequence[NewEvent]
                            ) -> list[Recorded | ProjectMismatch]:
        """Keep published events, in order, in one transaction where the store can: for each,
        drop it as a duplicate when its ``event_id`` is known; else make the task known, merge
        ``state`` into its current state, take the next offset of the task's project (None
        while it has none) and keep the stamped event.  ``project_id`` None means the task's
        own project; another project than the task's gives ProjectMismatch for that event,
        which changes nothing, and the others are kept."""
        ...

    async def find_events(self, event_ids: Sequence[str]) -> dict[str, Recorded]:
        """The kept events among ``event_ids`` (each marked duplicate)."""
        ...

    async def keep_event(self, project_id: str, build: Callable[[int], KeptEvent]
                         ) -> KeptEvent:
        """Take the project's next offset, and keep the server event ``build`` makes with it
        (a lock.expired found by the sweeper): one transaction."""
        ...

    async def events(self, project_id: str, after: int | None, limit: int
                     ) -> list[tuple[int, bytes]]:
        """Kept events of a project as (offset, data), in offset order: the first ``limit``
        with an offset above ``after``, or the latest ``limit`` when ``after`` is None.  At
        least the last ``events_kept`` of each project are kept; older ones may be dropped."""
        ...

    async def stream(self, project_id: str) -> Stream:
        """The project's stream, started (with its epoch) if it was not yet."""
        ...

    async def projects(self) -> list[str]:
        """Every project with a stream, sorted: what a view of the whole team catches up on."""
        ...

    async def next_offset(self, project_id: str) -> int: ...

    async def last_offset(self, project_id: str) -> int: ...

    async def get_resource(self, resource_id: str, version: int | None = None
                           ) -> Resource | None:
        """A version of a resource (the latest when ``version`` is None), or None."""
        ...

    async def list_resources(self) -> list[Resource]:
        """The latest version of every resource, by id, without content."""
        ...

    async def put_resource(self, resource_id: str, content: str, expected_version: int,
                           updated_by: str, now: float, *, project_id: str | None = None,
                           announce: AnnounceResource | None = None
                           ) -> tuple[Resource, KeptEvent | None]:
        """Compare-and-set in one transaction: when the current version is
        ``expected_version`` (0: there is none), keep version ``expected_version + 1`` (every
        version is kept: a merge needs its base) with the event ``announce`` builds; else raise
        VersionConflict (or NoSuchResource).  ``project_id`` None keeps the current version's
        project."""
        ...

    async def close(self) -> None: ...
