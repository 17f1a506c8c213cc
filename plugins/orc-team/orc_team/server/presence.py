"""Presence per user, across all of that user's connections.

A user is ``online`` from their first connection, ``active`` while a connection says it runs a
task (``active_task``), ``away`` after ``away_after`` seconds without a message from any of their
connections (pings do not count: a keepalive is not a person), and ``offline`` when their last
connection closes; a user who went offline stays in the listing (``offline``, with when they were
last seen) for a day, the most recent :data:`OFFLINE_KEPT` of them, so the team sees who was
here and not only who is.  Every change is broadcast to every connected client as a ``presence``
message whose ``event_type`` names the transition (presence.online, .active, .idle, .away,
.offline).  When the connection that set ``active_task`` closes, the task is cleared with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from orc_team import protocol
from orc_team.protocol import PRESENCE_IDLE, PRESENCE_OFFLINE, PRESENCE_ONLINE, PresenceData
from orc_team.server.connection import Connection
from orc_team.server.hub import Hub

log = logging.getLogger("orc_team.server")

OFFLINE_KEPT = 200
"""How many users who went offline the listing remembers (the most recent)."""
OFFLINE_FOR = 24 * 3600.0
"""How long, in seconds, an offline user stays in the listing."""


@dataclass
class UserPresence:
    user_id: str
    display_name: str
    email: str | None
    last_activity: float
    last_seen: float
    connections: set[int] = field(default_factory=set)
    status: str = "online"
    active_task: str | None = None
    active_conn: int | None = None
    said_away: bool = False

    def json(self) -> PresenceData:
        return {"user_id": self.user_id, "display_name": self.display_name,
                "email": self.email, "status": self.status, "active_task": self.active_task,
                "last_seen": protocol.iso(self.last_seen), "connections": len(self.connections)}


class Shared(Protocol):
    """Presence merged across server processes (:mod:`orc_team.server.shared`)."""

    def local_changed(self, p: UserPresence) -> None: ...

    def snapshot(self) -> list[PresenceData]: ...


def _transition(before: str, after: str) -> str:
    if after == "online" and before == "active":
        return PRESENCE_IDLE
    return f"presence.{after}"


class Presence:
    def __init__(self, hub: Hub, away_after: float) -> None:
        self.hub = hub
        self.away_after = away_after
        self.users: dict[str, UserPresence] = {}
        self.gone: dict[str, PresenceData] = {}
        """Users whose last connection closed, oldest first: what they were when they left."""
        self.shared: Shared | None = None

    def _status(self, p: UserPresence, now: float) -> str:
        if p.said_away:
            return "away"
        if p.active_task is not None:
            return "active"
        return "away" if now - p.last_activity >= self.away_after else "online"

    def _settle(self, p: UserPresence, now: float, *, force: bool = False) -> None:
        status = self._status(p, now)
        if status != p.status or force:
            before, p.status = p.status, status
            event = PRESENCE_ONLINE if force else _transition(before, status)
            self._broadcast(p, event)

    def _broadcast(self, p: UserPresence, event_type: str) -> None:
        if self.shared is not None:  # it tells everyone once the processes' view changes
            self.shared.local_changed(p)
            return
        data = {**p.json(), "event_type": event_type}
        self.hub.broadcast(protocol.encode(protocol.message(protocol.PRESENCE, data=data)))

    def connect(self, conn: Connection) -> None:
        now = time.monotonic()
        p = self.users.get(conn.user)
        if p is None:
            self.gone.pop(conn.user, None)
            p = self.users[conn.user] = UserPresence(conn.user, conn.claims.name,
                                                     conn.claims.email, now, time.time())
            p.connections.add(conn.id)
            self._settle(p, now, force=True)
            return
        p.connections.add(conn.id)
        self.touch(conn)
        self._count(p)

    def disconnect(self, conn: Connection) -> None:
        p = self.users.get(conn.user)
        if p is None:
            return
        p.connections.discard(conn.id)
        if not p.connections:
            del self.users[conn.user]
            p.status, p.active_task, p.last_seen = "offline", None, time.time()
            self._broadcast(p, PRESENCE_OFFLINE)
            if self.shared is None:  # shared: every process remembers what it announces
                self.remember_gone(p.json())
            return
        if p.active_conn == conn.id:
            p.active_task = p.active_conn = None
        self._settle(p, time.monotonic())
        self._count(p)

    def _count(self, p: UserPresence) -> None:
        """Other processes learn this one's count of the user's connections (shown summed)."""
        if self.shared is not None:
            self.shared.local_changed(p)

    def touch(self, conn: Connection) -> None:
        """A message from the user (anything but a ping): they are not away."""
        p = self.users.get(conn.user)
        if p is None:
            return
        now = time.monotonic()
        p.last_activity, p.last_seen, p.said_away = now, time.time(), False
        self._settle(p, now)

    def update(self, conn: Connection, status: str | None, active_task: str | None
               ) -> PresenceData:
        """A ``presence`` message: ``active_task`` (or null) and optionally ``status: away``."""
        p = self.users[conn.user]
        now = time.monotonic()
        p.last_activity, p.last_seen = now, time.time()
        p.said_away = status == "away"
        p.active_task = active_task
        p.active_conn = conn.id if active_task is not None else None
        self._settle(p, now)
        return p.json()

    def sweep(self) -> None:
        now = time.monotonic()
        for p in list(self.users.values()):
            self._settle(p, now)

    def remember_gone(self, data: PresenceData) -> None:
        """Keep a user who left (the offline presence announced) for the listing."""
        self.gone.pop(data["user_id"], None)
        self.gone[data["user_id"]] = data
        while len(self.gone) > OFFLINE_KEPT:
            del self.gone[next(iter(self.gone))]

    def snapshot(self) -> list[PresenceData]:
        """Everyone connected (on every process, when shared), then who left in the last day
        (as announced: with several processes, once they left all of them), each user once,
        sorted by user id."""
        here = (self.shared.snapshot() if self.shared is not None
                else [p.json() for p in self.users.values()])
        present = {p["user_id"] for p in here}
        cutoff = protocol.iso(time.time() - OFFLINE_FOR)
        left = [p for user, p in self.gone.items()
                if user not in present and p["last_seen"] >= cutoff]
        return sorted(here + left, key=lambda p: p["user_id"])

    async def run_sweeper(self) -> None:
        """Notice users going away: a quarter of ``away_after`` late at most (and ≤ 1 s)."""
        interval = max(0.05, min(1.0, self.away_after / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                self.sweep()
            except Exception:
                log.exception("presence sweep failed")
