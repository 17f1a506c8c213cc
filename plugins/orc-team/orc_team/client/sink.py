"""Team mode's event sink (hook ``orc_git_event_sink``): the outbox, then the sender.

``publish`` writes the events into the outbox in one transaction and wakes the sender; it never
touches the network, so a run goes at the outbox's speed whether the server is up, down, or
accepting connections and never answering.  Each row records the client instance id of this
process (the lease holder's, when a locker of this context holds the task), so whoever delivers
it later speaks as its holder.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from orc_git.publish import TaskEvent
from orc_git.text import json_safe

from orc_team import protocol
from orc_team.client.outbox import NewRow, Outbox
from orc_team.client.sender import Connections, Drainer, Sender

if TYPE_CHECKING:
    from orc_git.context import Context

    from orc_team.client.wsclient import WSClient

log = logging.getLogger("orc_git.team")

CLOSE_BACKLOG = 1000
"""Events ``close`` still waits to deliver itself (a few batches: tens of milliseconds)."""


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def wire_data(event: TaskEvent, project: str | None) -> str:
    """The event's PublishData as the JSON text the server accepts: strict UTF-8 (a lone
    surrogate, e.g. from undecodable bytes, becomes U+FFFD) and no NaN (null instead)."""
    data: protocol.PublishData = {
        "event_id": event.event_id, "event_type": event.event_type, "task_id": event.task_id,
        "project_id": event.project_id or project, "made_at": protocol.iso(event.made_at),
        "payload": event.payload}
    try:
        return protocol.encode(dict(data)).decode()
    except (ValueError, UnicodeEncodeError):  # rare: clean the whole event, then strictly
        return protocol.encode(_finite(json_safe(dict(data)))).decode()


class OutboxSink:
    def __init__(self, outbox: Outbox, sender: Sender, client_id: str,
                 project: str | None) -> None:
        self.outbox = outbox
        self.sender = sender
        self.client_id = client_id
        self.project = project
        self._failed = 0

    def publish(self, events: Sequence[TaskEvent]) -> None:
        if not events:
            return
        cid, project = self.client_id, self.project
        rows: list[NewRow] = [(e.event_id, cid, e.made_at, wire_data(e, project))
                              for e in events]
        try:
            self.outbox.append(rows)
        except Exception as exc:  # even the memory outbox failed: count them, say so once
            self._failed += len(rows)
            if self._failed == len(rows):
                log.error("cannot keep events in the outbox (%s); they are lost", exc)
            return
        self.sender.wake()

    def presence(self, status: str, task_id: str | None) -> None:
        self.sender.presence(status, task_id)

    def close(self, timeout: float) -> None:
        """Deliver for at most ``timeout`` s; a backlog larger than CLOSE_BACKLOG is left at
        once to the background sync this process starts at exit (when it has connected), so
        the end of a chatty run does not wait on the network."""
        from orc_team.client.autosync import armed

        local = self.outbox.local_dir
        if (timeout > 0 and local is not None and not self.outbox.in_memory and armed(local)
                and self.outbox.waiting(CLOSE_BACKLOG + 1) > CLOSE_BACKLOG):
            timeout = 0.0
        self.sender.close(timeout)
        left = 0
        if self.outbox.in_memory:
            try:
                left = self.outbox.counts()["pending"]
            except Exception:
                left = 0
        left += self._failed
        if left:
            log.warning("%d events could not be delivered to the team server nor kept in the "
                        "outbox: they are lost", left)
        self.outbox.close()


def team_sink(context: Context) -> OutboxSink:
    """The sink of this process: it delivers over the locker's connection when the context's
    locker is the team locker (one connection per run, and presence on the one that holds)."""
    from orc_team.client.holder import client_id
    from orc_team.client.settings import settings_from_config
    from orc_team.client.team import TeamLocker

    settings = settings_from_config(context.config)
    locker = context.locker()
    own: WSClient | None = locker.server.client if isinstance(locker, TeamLocker) else None
    cid = own.client_id if own is not None else client_id()
    outbox = Outbox(context.repo.local_dir)
    sender = Sender(Drainer(outbox, Connections(settings, own)), cid)
    return OutboxSink(outbox, sender, cid, settings.project)
