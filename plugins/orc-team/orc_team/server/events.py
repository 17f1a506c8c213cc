"""The event stream: server-stamped events fanned out to a task's and its project's subscribers.

Every event, published by an executor or raised by the lock service, is stamped here with the
user it concerns, a timestamp and the project's next offset (persisted, so offsets keep increasing
across restarts and a reconnecting client will be able to ask for what it missed).  Task events
also keep the task's ``current_state`` (status, phase, iteration) that subscribers receive.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from orc_team.server import protocol
from orc_team.server.connection import Connection
from orc_team.server.hub import Hub
from orc_team.server.store import Store

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


class EventBus:
    def __init__(self, hub: Hub, store: Store) -> None:
        self.hub = hub
        self.store = store

    async def publish(self, event_type: str, task_id: str, project_id: str | None,
                      payload: dict[str, Any], *, user: str | None, user_name: str | None
                      ) -> dict[str, Any]:
        """An executor's event: update the task's state, stamp, fan out.  Returns the stamps."""
        now = time.time()
        patch = state_patch(event_type, payload, user or "", now)
        offset, task = await self.store.record_event(task_id, project_id, patch)
        return self._send(event_type, task_id, project_id or task.project_id, payload,
                          user=user, user_name=user_name, offset=offset, now=now)

    def announce(self, event_type: str, task_id: str, project_id: str | None,
                 payload: dict[str, Any], *, user: str | None, user_name: str | None,
                 offset: int | None, also: Iterable[Connection] = ()) -> None:
        """A server event (lock.*): no state to keep; ``offset`` was taken by the caller (with
        the lock change itself, when the store could)."""
        self._send(event_type, task_id, project_id, payload, user=user, user_name=user_name,
                   offset=offset, now=time.time(), also=also)

    def _send(self, event_type: str, task_id: str, project_id: str | None,
              payload: dict[str, Any], *, user: str | None, user_name: str | None,
              offset: int | None, now: float, also: Iterable[Connection] = ()
              ) -> dict[str, Any]:
        stamps = {"timestamp": protocol.iso(now), "offset": offset}
        targets = self.hub.audience(task_id, project_id, also)
        if targets:  # most lock changes have no audience: then nothing is encoded
            data = {"event_type": event_type, "task_id": task_id, "project_id": project_id,
                    "user": user, "user_name": user_name, **stamps, "payload": payload}
            self.hub.deliver(protocol.encode(protocol.message("event", data=data)), targets)
        return {**stamps, "task_id": task_id, "project_id": project_id}
