"""Who is connected and who listens to what; fan-out of one encoded message to many queues.

Fan-out never awaits: it frames the message once and appends that frame to each target's
bounded queue, written at the end of the loop's turn (see :mod:`orc_team.server.connection`), so
a slow subscriber only ever fills its own queue and delays nobody else.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterable
from typing import Literal, Protocol

from orc_team.server.connection import Connection, text_frame

Kind = Literal["task", "project"]


class Watcher(Protocol):
    """Told which tasks this process has subscribers for (several processes on one store:
    a lock event of a task without a project is published only where someone listens)."""

    def watch(self, task_id: str) -> Awaitable[None]: ...

    def unwatch(self, task_id: str) -> None: ...


class Hub:
    def __init__(self, max_subscriptions: int) -> None:
        self.max_subscriptions = max_subscriptions
        self.connections: dict[int, Connection] = {}
        self._by_holder: dict[tuple[str, str], set[Connection]] = {}
        self._subs: dict[Kind, dict[str, set[Connection]]] = {"task": {}, "project": {}}
        self.watchers: set[Connection] = set()
        """Connections subscribed to every project (``all_projects``): they hear every event."""
        self._next_id = 0
        self.watcher: Watcher | None = None

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def add(self, conn: Connection) -> None:
        self.connections[conn.id] = conn
        self._by_holder.setdefault(conn.holder.key, set()).add(conn)

    def remove(self, conn: Connection) -> None:
        self.connections.pop(conn.id, None)
        holders = self._by_holder.get(conn.holder.key)
        if holders is not None:
            holders.discard(conn)
            if not holders:
                del self._by_holder[conn.holder.key]
        self.watchers.discard(conn)
        for task in conn.tasks:
            self._forget("task", task, conn)
        for project in conn.projects:
            self._forget("project", project, conn)
        conn.tasks.clear()
        conn.projects.clear()

    def _forget(self, kind: Kind, key: str, conn: Connection) -> None:
        subs = self._subs[kind].get(key)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self._subs[kind][key]
                if kind == "task" and self.watcher is not None:
                    self.watcher.unwatch(key)

    def subscribe(self, conn: Connection, kind: Kind, key: str) -> bool:
        """False when the connection already has as many subscriptions as it may."""
        mine = conn.tasks if kind == "task" else conn.projects
        if key not in mine and len(conn.tasks) + len(conn.projects) >= self.max_subscriptions:
            return False
        mine.add(key)
        self._subs[kind].setdefault(key, set()).add(conn)
        return True

    def unsubscribe(self, conn: Connection, kind: Kind, key: str) -> bool:
        mine = conn.tasks if kind == "task" else conn.projects
        if key not in mine:
            return False
        mine.discard(key)
        self._forget(kind, key, conn)
        return True

    def audience(self, task_id: str | None, project_id: str | None,
                 also: Iterable[Connection] = ()) -> set[Connection]:
        """Who hears about the task: its subscribers, its project's, the watchers of every
        project, and ``also``."""
        targets = set(also)
        targets.update(self.watchers)
        if task_id is not None:
            targets.update(self._subs["task"].get(task_id, ()))
        if project_id is not None:
            targets.update(self._subs["project"].get(project_id, ()))
        return targets

    def holder_connections(self, key: tuple[str, str]) -> set[Connection]:
        return set(self._by_holder.get(key, ()))

    def broadcast(self, data: bytes) -> int:
        return self.deliver(data, list(self.connections.values()))

    @staticmethod
    def deliver(data: bytes, targets: Iterable[Connection], project_id: str | None = None,
                offset: int | None = None) -> int:
        """Queue the same bytes for each target; returns how many took them.  A connection
        whose token has expired gets nothing, even in the moment before its expiry timer
        runs and closes it.  A connection replaying the event's project has it held until
        its replay catches up (an event of that project is never sent twice or out of order)."""
        sent = 0
        now = time.time()
        frame = text_frame(data)  # once for every target
        for conn in targets:
            if conn.claims.expires <= now:
                continue
            if conn.replays and project_id in conn.replays:
                conn.replays[project_id].hold(offset, data)
                sent += 1
            elif conn.send_bytes(data, frame):
                sent += 1
        return sent
