"""The event stream: server-stamped events fanned out to a task's and its project's subscribers.

Every event, published by an executor or raised by the lock service, is stamped here with the
user it concerns, a timestamp and the project's next offset (persisted, so offsets keep increasing
across restarts and a reconnecting client will be able to ask for what it missed).  Task events
also keep the task's ``current_state`` (status, phase, iteration) that subscribers receive.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from orc_team import protocol
from orc_team.protocol import FORBIDDEN, ProtocolError
from orc_team.server.connection import Connection
from orc_team.server.hub import Hub
from orc_team.server.store import ClientInstance, LockRecord, ProjectMismatch, Store

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


class EventBus:
    def __init__(self, hub: Hub, store: Store) -> None:
        self.hub = hub
        self.store = store

    async def publish(self, event_type: str, task_id: str, project_id: str | None,
                      payload: dict[str, Any], *, holder: ClientInstance, admin: bool
                      ) -> dict[str, Any]:
        """An executor's event: check who may publish it, update the task's state, stamp, fan
        out.  Returns the stamps.

        While a task is locked, its lease holder (same user, same client instance) speaks for
        it: anyone else's event about it is refused (FORBIDDEN), an admin's is accepted and
        stamped ``holder: false``.  A task's events stay in the first project it was seen
        under.  The stamps (user, user_name, timestamp, offset, holder) are the server's own;
        fields of those names sent in ``data`` are never used."""
        now = time.time()
        lock = await self.store.get_lock(task_id, now)
        is_holder = lock is not None and lock.held_by(holder)
        if lock is not None and not is_holder and not admin:
            raise ProtocolError(FORBIDDEN, f"{task_id} is locked by {_who(lock)}: only the lock's "
                                "holder (its user and client instance) publishes events about "
                                "it while it is held")
        patch = state_patch(event_type, payload, holder.user, now)
        try:
            offset, task = await self.store.record_event(task_id, project_id, patch)
        except ProjectMismatch as exc:
            raise ProtocolError(FORBIDDEN, f"{task_id} belongs to project {exc.project_id}; its "
                                f"events cannot go to project {project_id}") from None
        return self._send(event_type, task_id, task.project_id, payload, user=holder.user,
                          user_name=holder.name, offset=offset, now=now,
                          holder=is_holder)

    def announce(self, event_type: str, task_id: str, project_id: str | None,
                 payload: Mapping[str, Any], *, user: str | None, user_name: str | None,
                 offset: int | None, also: Iterable[Connection] = ()) -> None:
        """A server event (lock.*): no state to keep; ``offset`` was taken by the caller (with
        the lock change itself, when the store could)."""
        self._send(event_type, task_id, project_id, payload, user=user, user_name=user_name,
                   offset=offset, now=time.time(), also=also)

    def _send(self, event_type: str, task_id: str, project_id: str | None,
              payload: Mapping[str, Any], *, user: str | None, user_name: str | None,
              offset: int | None, now: float, also: Iterable[Connection] = (),
              holder: bool | None = None) -> dict[str, Any]:
        stamps: dict[str, Any] = {"timestamp": protocol.iso(now), "offset": offset}
        if holder is not None:  # published events say whether their sender held the lock
            stamps["holder"] = holder
        targets = self.hub.audience(task_id, project_id, also)
        if targets:  # most lock changes have no audience: then nothing is encoded
            data = {"event_type": event_type, "task_id": task_id, "project_id": project_id,
                    "user": user, "user_name": user_name, **stamps, "payload": payload}
            self.hub.deliver(protocol.encode(protocol.message(protocol.EVENT, data=data)),
                             targets)
        return {**stamps, "task_id": task_id, "project_id": project_id}
