"""The event stream: server-stamped events fanned out to a task's and its project's subscribers.

Every event, published by an executor or raised by the lock service, is stamped here with its
``event_id``, the user it concerns, a timestamp and the project's next offset, and kept in the
store with it: offsets keep increasing across restarts, a reconnecting client asks for what it
missed (``subscribe since``, :mod:`orc_team.server.replay`), and a re-sent ``event_id`` is
dropped.  Fan-out happens only once the event is kept, which is what lets a replay hand over to
live events without a gap.  Task events also keep the task's ``current_state`` (status, phase,
iteration) that subscribers receive.
"""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from orc_team import protocol
from orc_team.protocol import FORBIDDEN, ProtocolError
from orc_team.server.connection import Connection
from orc_team.server.hub import Hub
from orc_team.server.store import (
    ClientInstance,
    KeptEvent,
    LockRecord,
    NewEvent,
    ProjectMismatch,
    Recorded,
    Store,
)

STATUS_BY_EVENT = {
    "task.created": "created", "task.started": "running", "task.resumed": "running",
    "task.paused": "paused", "task.blocked": "blocked", "task.completed": "completed",
    "task.failed": "failed",
}
STATUSES = ("created", "running", "paused", "blocked", "completed", "failed")


def state_patch(event_type: str, payload: dict[str, Any], user: str, now: float) -> dict[str, Any]:
    """What an event says about the task's current state; transcript lines say nothing."""
    if event_type == "task.transcript":
        return {}
    patch: dict[str, Any] = {}
    status = payload.get("status")
    if isinstance(status, str) and status in STATUSES:
        patch["status"] = status
    if event_type in STATUS_BY_EVENT:
        patch["status"] = STATUS_BY_EVENT[event_type]
    phase = payload.get("phase")
    if isinstance(phase, str) and len(phase) <= 100:
        patch["phase"] = phase
    iteration = payload.get("iteration")
    if isinstance(iteration, int) and not isinstance(iteration, bool):
        patch["iteration"] = iteration
    if patch:
        patch["updated_at"] = protocol.iso(now)
        patch["updated_by"] = user
    return patch


def _who(lock: LockRecord) -> str:
    name = lock.holder.name or lock.holder.user
    return f"{name} ({lock.holder.user}, client {lock.holder.client})"


def made_before(made_at: str | None, lock: LockRecord) -> bool:
    """Whether an event was made before ``lock`` was granted: an outbox delivering a run's events
    late, after another holder took the task.  Such an event is history, not a claim on the
    task: it is kept (stamped ``holder: false``) but changes nothing in the task's state, so
    nothing made offline is lost and the current holder's state stands.  ``made_at`` is the
    publisher's clock; a skewed one only moves an event between kept-as-history and refused."""
    if made_at is None:
        return False
    try:
        made = datetime.datetime.fromisoformat(made_at.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    if made.tzinfo is None:
        made = made.replace(tzinfo=datetime.UTC)
    return made.timestamp() < lock.acquired_at


@dataclass(frozen=True)
class Publish:
    """One event as a client sent it (an ``event``'s data, or an entry of ``events``),
    validated; ``event_id`` None: the server makes one."""

    event_type: str
    task_id: str
    project_id: str | None
    payload: dict[str, Any]
    event_id: str | None = None
    made_at: str | None = None


def frame(data: bytes) -> bytes:
    """The ``event`` push around a kept event's JSON, without decoding it."""
    return b'{"type":"event","data":' + data + b"}"


def _ack(result: Recorded, task_id: str, timestamp: str, holder: bool) -> dict[str, Any]:
    """An ack: the stored stamps for a duplicate, this event's otherwise."""
    stored = result.stored or {}
    if result.duplicate:
        task_id = stored.get("task_id", task_id)
        timestamp = stored.get("timestamp", timestamp)
        holder = stored.get("holder", holder)
    return {"event_id": result.event_id, "task_id": task_id, "project_id": result.project_id,
            "offset": result.offset, "epoch": result.epoch, "timestamp": timestamp,
            "duplicate": result.duplicate, "holder": holder}


def refusal(event_id: str | None, exc: ProtocolError) -> dict[str, Any]:
    """An entry of ``acks`` for an event that was not kept."""
    return {"event_id": event_id, "error": {"code": exc.code, "message": exc.message}}


class Relay(Protocol):
    """Fan-out through a store shared by several server processes (:mod:`.shared`)."""

    def relay(self, data: bytes, task_id: str | None, project_id: str | None,
              offset: int | None, *, published: bool) -> bool:
        """True when the relay delivers the event, to this process's connections too."""
        ...


class EventBus:
    def __init__(self, hub: Hub, store: Store) -> None:
        self.hub = hub
        self.store = store
        self.relay: Relay | None = None

    async def publish(self, items: Sequence[Publish], *,
                      sender: ClientInstance, admin: bool) -> list[dict[str, Any]]:
        """Executors' events, in order: check who may publish each, update the tasks' state,
        stamp, keep (one store transaction), fan out.  Returns one ack per item, or a
        :func:`refusal` for an item refused here.

        An ``event_id`` already kept is acked again with its stored stamps (``duplicate``) and
        not sent to anyone: re-sending is always safe.  That is checked first, so a re-sent
        event is acked even after its lock changed hands.  While a task is locked, its lease
        holder (same user, same client instance) speaks for it: anyone else's event about it
        is refused (FORBIDDEN), an admin's is accepted and stamped ``holder: false``, and one
        made before the lock was granted is kept as history (:func:`made_before`).  A task's
        events stay in the first project it was seen under.  The stamps (user, user_name,
        timestamp, offset, holder) are the server's own; fields of those names sent in
        ``data`` are never used."""
        now = time.time()
        timestamp = protocol.iso(now)
        ids = [item.event_id for item in items if item.event_id]
        known = await self.store.find_events(ids) if ids else {}
        out: list[dict[str, Any] | None] = [None] * len(items)
        fresh: list[tuple[int, NewEvent, bool]] = []
        for i, item in enumerate(items):
            if item.event_id in known:
                out[i] = _ack(known[item.event_id], item.task_id, timestamp, False)
                continue
            event_id = item.event_id or str(uuid.uuid4())
            lock = await self.store.get_lock(item.task_id, now)
            is_holder = lock is not None and lock.held_by(sender)
            history = lock is not None and not is_holder and made_before(item.made_at, lock)
            if lock is not None and not is_holder and not admin and not history:
                out[i] = refusal(item.event_id, ProtocolError(
                    FORBIDDEN, f"{item.task_id} is locked by {_who(lock)}: only the lock's "
                    "holder (its user and client instance) publishes events about it while it "
                    "is held"))
                continue
            data = {"event_id": event_id, "event_type": item.event_type,
                    "task_id": item.task_id, "project_id": None, "user": sender.user,
                    "user_name": sender.name, "made_at": item.made_at, "timestamp": timestamp,
                    "offset": None, "holder": is_holder, "payload": item.payload}
            patch = {} if history else state_patch(item.event_type, item.payload,
                                                    sender.user, now)
            fresh.append((i, NewEvent(event_id, item.task_id, item.project_id, patch, data),
                          is_holder))
        results = await self.store.record_events([event for _, event, _ in fresh])
        for (i, event, is_holder), result in zip(fresh, results, strict=True):
            if isinstance(result, ProjectMismatch):
                out[i] = refusal(event.event_id, ProtocolError(
                    FORBIDDEN, f"{event.task_id} belongs to project {result.project_id}; its "
                    f"events cannot go to project {event.project_id}"))
                continue
            if not result.duplicate:  # a duplicate within this batch is sent once
                self._deliver(result, event.task_id)
            out[i] = _ack(result, event.task_id, timestamp, is_holder)
        return [ack for ack in out if ack is not None]

    @staticmethod
    def announcement(event_type: str, task_id: str | None, project_id: str | None,
                     payload: Mapping[str, Any], *, user: str | None, user_name: str | None,
                     offset: int | None) -> KeptEvent:
        """A server event (lock.*, resource.*), stamped: the store keeps it with the lock change it
        announces (``offset`` was taken there), then :meth:`send` fans it out."""
        return KeptEvent(project_id, offset, {
            "event_type": event_type, "task_id": task_id, "project_id": project_id,
            "user": user, "user_name": user_name, "made_at": None,
            "timestamp": protocol.iso(time.time()), "offset": offset, "payload": payload})

    def send(self, event: KeptEvent, task_id: str | None, also: Iterable[Connection] = ()) -> None:
        if self.relay is not None and self.relay.relay(
                event.data, task_id, event.project_id, event.offset,
                published=event.offset is not None):
            return
        targets = self.hub.audience(task_id, event.project_id, also)
        if targets:
            self.hub.deliver(frame(event.data), targets, event.project_id, event.offset)

    def _deliver(self, result: Recorded, task_id: str) -> None:
        if self.relay is not None and self.relay.relay(
                result.data, task_id, result.project_id, result.offset, published=True):
            return
        targets = self.hub.audience(task_id, result.project_id)
        if targets:
            self.hub.deliver(frame(result.data), targets, result.project_id, result.offset)
