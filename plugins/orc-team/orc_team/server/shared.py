"""Several server processes on one Redis: events and presence reach the connections of all.

**Events.**  The script that keeps an event (at its project's next offset) also publishes it on
``orc:DB:fanout``; every process, the one that kept it included, delivers project events from that
channel only, so each process sends them in offset order (one channel, one order).  A gap (the
subscription dropped while Redis restarted) is filled from the stream, from the last offset
delivered.  Events without a project have no order to keep: the process that made them sends
them at once and publishes them for the others, when another process has subscribers for the
task (``orc:watch:TASK``, set before such a subscription is answered; the lock script says).
The holder who just lost a lease (``lock.stolen``,
``lock.expired``, a forced ``lock.released``) is told on whichever process it is connected to:
the event names it.

**Presence.**  Each process keeps its own connections' presence per user
(:class:`~orc_team.server.presence.Presence`) and writes it to the hash ``orc:presence:USER``
(one field per process) with a message on ``orc:DB:presence``, in one script.  Every process keeps
a mirror of those entries and derives the user's one presence from them (connections summed;
active over online over away); when that changes, it tells its own connections.  So a user with
connections on two processes is one presence, and each connection hears each change once.  A
process that died (its ``orc:alive:ID`` key expired) has its entries removed by the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from orc_team import protocol
from orc_team.protocol import (
    LOCK_EXPIRED,
    LOCK_RELEASED,
    LOCK_STOLEN,
    PRESENCE_OFFLINE,
    PRESENCE_ONLINE,
    PresenceData,
)
from orc_team.server.events import frame

if TYPE_CHECKING:
    from orc_team.server.presence import UserPresence
    from orc_team.server.redis_store import RedisStore
    from orc_team.server.state import Server

log = logging.getLogger("orc_team.server")

ALIVE_TTL = 5
"""Seconds a process's ``orc:alive`` key lives unless renewed (every second)."""
_RANK = {"active": 3, "online": 2, "away": 1}
_WRITE_PRESENCE = """
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
redis.call('PUBLISH', KEYS[2], ARGV[2] .. '\\n' .. ARGV[1] .. '\\n' .. ARGV[3])
"""


def lost_holder(data: bytes) -> tuple[str, str] | None:
    """The holder a lock event tells that its lease is gone, from the event itself."""
    if b'"event_type":"lock.' not in data:
        return None
    event = protocol.decode(data)
    payload = event.get("payload") or {}
    kind = event.get("event_type")
    fields = {LOCK_STOLEN: ("old_owner", "old_client"),
              LOCK_EXPIRED: ("previous_owner", "previous_client")}.get(kind)
    if kind == LOCK_RELEASED and payload.get("forced_by"):
        fields = ("owner", "client")
    if fields is None:
        return None
    return str(payload.get(fields[0])), str(payload.get(fields[1]))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def merge(entries: Iterable[PresenceData]) -> PresenceData | None:
    """One user's presence from their entries on each process (None: offline)."""
    found = sorted(entries, key=lambda e: (_RANK.get(e["status"], 0), e["last_seen"]))
    if not found:
        return None
    best = found[-1]
    return {**best, "last_seen": max(e["last_seen"] for e in found),
            "connections": sum(e["connections"] for e in found)}


def _transition(before: str | None, after: str) -> str:
    if before is None:
        return PRESENCE_ONLINE
    if after == "online" and before == "active":
        return protocol.PRESENCE_IDLE
    return f"presence.{after}"


class Relay:
    """This process's side of the sharing: the fan-out reader, its presence mirror, and its
    liveness key."""

    def __init__(self, store: RedisStore, server: Server) -> None:
        self.store = store
        self.server = server
        self.client: aioredis.Redis = store.client
        self.prefix = store.prefix
        self.channels = store.channels
        self.origin = store.origin
        self.delivered: dict[str, int] = {}
        """The last offset delivered per project."""
        self.entries: dict[str, dict[str, PresenceData]] = {}
        """user → process → that process's entry."""
        self.watching: set[str] = set()
        """Tasks this process has subscribers for, as told to the other processes."""
        self.shown: dict[str, PresenceData] = {}
        """user → the presence this process's connections were last told."""
        self._write = self.client.register_script(_WRITE_PRESENCE)
        self._writes: asyncio.Queue[Callable[[], Awaitable[Any]]] = asyncio.Queue()
        """Writes made from synchronous code, sent one at a time in order by :meth:`_writer`."""

    # -- events ---------------------------------------------------------------------------------

    def relay(self, data: bytes, task_id: str | None, project_id: str | None,
              offset: int | None, *, published: bool) -> bool:
        """Called for every event this process sends: True when the reader delivers it (a
        project event, published by the script that kept it); False to deliver it here now,
        after publishing it for the others when the store has not and someone elsewhere may
        hear it: the task's subscribers (the lock script said whether another process has
        any), or a holder losing its lease."""
        if offset is not None:
            return True
        heard = task_id is not None and task_id not in self.store.unheard
        if not published and (heard or lost_holder(data) is not None):
            message = b"\n".join([self.origin.encode(), (task_id or "").encode(),
                                  (project_id or "").encode(), b"", data])
            self._writes.put_nowait(lambda: self.client.publish(self.channels + "fanout", message))
        return False

    async def _writer(self) -> None:
        while True:
            write = await self._writes.get()
            with contextlib.suppress(Exception):  # the store logs an outage once
                await self.store.guard(write)

    async def _on_event(self, message: bytes) -> None:
        origin, task, project, offset, data = message.split(b"\n", 4)
        if not offset:
            if origin.decode() != self.origin:
                self._deliver(data, task.decode() or None, project.decode() or None, None)
            return
        project_id, at = project.decode(), int(offset)
        last = self.delivered.get(project_id)
        if last is not None and at <= last:
            return
        if last is not None and at > last + 1:
            await self._catch_up(project_id, at - 1)
        self._deliver(data, task.decode() or None, project_id, at)
        self.delivered[project_id] = max(at, self.delivered.get(project_id, at))

    async def _catch_up(self, project_id: str, upto: int | None = None) -> None:
        """Deliver what the channel lost (a gap, or missed while reconnecting), from the
        stream: after the last offset delivered, up to ``upto`` (None: all kept)."""
        last = self.delivered.get(project_id)
        if last is None:
            return
        while upto is None or last < upto:
            rows = await self.store.events(project_id, last, 500)
            rows = [row for row in rows if upto is None or row[0] <= upto]
            if not rows:
                break
            for offset, data in rows:
                event = protocol.decode(data)
                self._deliver(data, event.get("task_id"), project_id, offset)
                last = offset
        self.delivered[project_id] = last

    def _deliver(self, data: bytes, task_id: str | None, project_id: str | None,
                 offset: int | None) -> None:
        hub = self.server.hub
        holder = lost_holder(data)
        also = hub.holder_connections(holder) if holder is not None else set()
        targets = hub.audience(task_id, project_id, also)
        if targets:
            hub.deliver(frame(data), targets, project_id, offset)

    async def watch(self, task_id: str) -> None:
        """This process has a subscriber for the task: the others learn it before the
        subscription is answered."""
        if task_id not in self.watching:
            self.watching.add(task_id)
            await self.store.call("WATCH", "1", task_id)

    def unwatch(self, task_id: str) -> None:
        self.watching.discard(task_id)
        self._writes.put_nowait(lambda: self.store.call("WATCH", "0", task_id))

    # -- presence -------------------------------------------------------------------------------

    def local_changed(self, p: UserPresence) -> None:
        """This process's presence of one user changed (or ended: no connections left)."""
        entry = b"" if not p.connections else protocol.encode(dict(p.json()))
        keys = [self.prefix + "presence:" + p.user_id, self.channels + "presence"]
        self._writes.put_nowait(lambda: self._write(keys=keys,
                                                    args=[self.origin, p.user_id, entry]))

    def _on_presence(self, message: bytes) -> None:
        user, origin, entry = message.split(b"\n", 2)
        mine = self.entries.setdefault(user.decode(), {})
        if entry:
            mine[origin.decode()] = protocol.decode(entry)
        else:
            mine.pop(origin.decode(), None)
        self._settle(user.decode())

    def _settle(self, user: str) -> None:
        merged = merge(self.entries.get(user, {}).values())
        before = self.shown.get(user)
        if merged is None:
            self.entries.pop(user, None)
            if before is None:
                return
            del self.shown[user]
            gone: PresenceData = {**before, "status": "offline", "active_task": None,
                                  "connections": 0, "last_seen": protocol.iso(time.time())}
            self._broadcast(gone, PRESENCE_OFFLINE)
            self.server.presence.remember_gone(gone)  # on every process, as announced
            return
        self.shown[user] = merged
        if before is None or (before["status"], before["active_task"]) != (
                merged["status"], merged["active_task"]):
            self._broadcast(merged, _transition(before and before["status"],
                                                merged["status"]))

    def _broadcast(self, data: PresenceData, event_type: str) -> None:
        message = protocol.message(protocol.PRESENCE, data={**data, "event_type": event_type})
        self.server.hub.broadcast(protocol.encode(message))

    def snapshot(self) -> list[PresenceData]:
        return [self.shown[user] for user in sorted(self.shown)]

    async def _load_presence(self) -> None:
        """Every process's entries as Redis has them now (the channel brings the changes),
        this one's own first written again (writes made while Redis was away were lost)."""
        for p in list(self.server.presence.users.values()):
            self.local_changed(p)
        fresh: dict[str, dict[str, PresenceData]] = {}
        async for key in self.client.scan_iter(match=self.prefix + "presence:*", count=500):
            user = _text(key).removeprefix(self.prefix + "presence:")
            for origin, entry in (await self.client.hgetall(key)).items():
                fresh.setdefault(user, {})[_text(origin)] = protocol.decode(
                    entry if isinstance(entry, bytes) else entry.encode())
        for p in self.server.presence.users.values():  # what the writes above will say
            if p.connections:
                fresh.setdefault(p.user_id, {})[self.origin] = p.json()
        users = set(self.entries) | set(fresh)
        self.entries = fresh
        for user in users:
            self._settle(user)

    async def _forget_self(self) -> None:
        """A clean stop: this process's entries and liveness go now, not when they expire."""
        for user, entries in list(self.entries.items()):
            if self.origin in entries:
                await self._write(keys=[self.prefix + "presence:" + user,
                                        self.channels + "presence"],
                                  args=[self.origin, user, b""])
        await self.store.call("FORGET_ORIGIN", self.origin)
        await self.client.delete(self.prefix + "alive:" + self.origin)

    async def _sweep_dead(self) -> None:
        """Renew this process's liveness; remove what processes that died left behind (their
        users' presence entries, their task watches)."""
        await self.client.set(self.prefix + "alive:" + self.origin, 1, ex=ALIVE_TTL)
        known = {_text(o) for o in await self.client.smembers(self.prefix + "origins")}
        origins = (known | {o for entries in self.entries.values() for o in entries}) - {
            self.origin}
        for origin in origins:
            if await self.client.exists(self.prefix + "alive:" + origin):
                continue
            log.info("server process %s is gone: its users' presence is removed", origin)
            for user, entries in list(self.entries.items()):
                if origin in entries:
                    await self._write(keys=[self.prefix + "presence:" + user,
                                            self.channels + "presence"],
                                      args=[origin, user, b""])
            await self.store.call("FORGET_ORIGIN", origin)

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Read both channels until cancelled, reconnecting (and catching up) after an
        outage; renew liveness and sweep dead processes every second."""
        helpers = [asyncio.create_task(self._sweeper()), asyncio.create_task(self._writer())]
        try:
            while True:
                try:
                    await self._listen()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Redis went away: the store logs it once
                    self.store.unavailable(exc)
                    await asyncio.sleep(0.2)
        finally:
            for task in helpers:
                task.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._forget_self(), 2.0)

    async def _listen(self) -> None:
        pubsub = self.client.pubsub()
        try:
            await pubsub.subscribe(self.channels + "fanout", self.channels + "presence")
            await self.client.set(self.prefix + "alive:" + self.origin, 1, ex=ALIVE_TTL)
            await self.store.call("WATCH", "1", *self.watching)  # again: Redis may have lost it
            await self._load_presence()
            for project in list(self.delivered):
                await self._catch_up(project)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                   timeout=1.0)
                if message is None:
                    continue
                channel = message["channel"].decode()
                if channel.endswith("fanout"):
                    await self._on_event(message["data"])
                else:
                    self._on_presence(message["data"])
        finally:
            with contextlib.suppress(Exception):  # never holds up a shutdown
                await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]

    async def _sweeper(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self._sweep_dead()
            await asyncio.sleep(1.0)

