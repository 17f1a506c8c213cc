"""The store for several server processes: one Redis (``--store redis://HOST:PORT[/DB]``).

Every decision is one Lua script (:mod:`orc_team.server.redis_lua`), so it is atomic across all
the processes on that Redis.  A lock change that is announced (its task has a project) takes two
calls of the same script: the first decides and changes nothing; the caller builds the events
for that decision; the second decides again and, when the decision is unchanged, applies it and
keeps the events at the project's next offsets in the same script (else the caller builds anew).
The events are encoded here with a placeholder offset which the script fills in: the stream entry,
the dedupe mark and the fan-out message are made in the script that takes the offset, so every
project's stream is written in offset order.

Fencing tokens are ``epoch * 1024 + n``: ``n`` counts a task's grants as the SQLite store does;
the epoch is bumped by the first connection to a Redis whose ``run_id`` changed (restarted, or
a replica promoted), to at least the Redis clock in milliseconds since 2026-01-01 and above any
epoch this process has seen.  So even a restart that lost writes (no AOF, a power cut with
``appendfsync everysec``, an unreplicated failover) never hands out a token again: every token
given out before was below the clock's value then.  docs/team-server.md states the guarantee.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions
from orc_git.errors import StorageError, UsageError
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff

from orc_team import protocol
from orc_team.protocol import EVENTS_KEPT, HeadData, Resource
from orc_team.server import redis_lua
from orc_team.server.shared import Relay
from orc_team.server.store import (
    Announce,
    AnnounceResource,
    ClientInstance,
    Grant,
    KeptEvent,
    LockRecord,
    NewEvent,
    NoSuchResource,
    ProjectMismatch,
    Recorded,
    Release,
    StoreUnavailable,
    Stream,
    TaskRecord,
    VersionConflict,
    stored_head,
)

if TYPE_CHECKING:
    from orc_team.server.state import Server

log = logging.getLogger("orc_team.server")

PREFIX = "orc:"
DEDUPE_TTL = 30 * 86400
"""Seconds an event id is remembered for dedupe (while its event is also still kept)."""
RETRIES = 5
"""Attempts at an announced lock change whose decision another process changed meanwhile."""
_PLACE = -(10**15)
"""Offsets announce() is given before the script takes the real ones: never a real offset."""
_PROJECT = "\x00project\x00"
UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
               redis.exceptions.BusyLoadingError, OSError)
T = TypeVar("T")


@dataclass(frozen=True)
class Address:
    """Where the Redis is: ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``."""

    host: str
    port: int
    db: int
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        """For logs and messages: never the password."""
        auth = "***@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/{self.db}"

    def options(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "db": self.db,
                "username": self.username, "password": self.password}


def parse_url(url: str) -> Address:
    """``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``; anything else is a UsageError (which
    never repeats the password)."""
    parts = urllib.parse.urlsplit(url)
    shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    wrong = f"--store {shown}: expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]"
    try:
        port = parts.port or 6379
        db = int(parts.path.strip("/") or 0)
    except ValueError:
        raise UsageError(wrong) from None
    if parts.scheme != "redis" or not parts.hostname or parts.query or db < 0:
        raise UsageError(wrong)
    unquote = urllib.parse.unquote
    return Address(parts.hostname, port, db, unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _holder_json(holder: ClientInstance) -> str:
    return json.dumps([holder.user, holder.client, holder.name, holder.email],
                      ensure_ascii=False)


def _holder(text: Any) -> ClientInstance:
    user, client, name, email = protocol.decode(text)
    return ClientInstance(user, client, name, email)


def _key(holder: ClientInstance) -> str:
    return f"{holder.user}\n{holder.client}"


def _lock(task_id: str, row: Sequence[Any]) -> LockRecord | None:
    """A lock from a script's answer: outcome, project, heard elsewhere, then the seven lock
    fields (holder key, holder, token, ttl, acquired, heartbeat, expires)."""
    if not row[3]:
        return None
    project = _s(row[1]) or None
    return LockRecord(task_id, _holder(row[4]), int(row[5]), int(row[6]), float(row[7]),
                      float(row[8]), float(row[9]), project)


def _split(data: bytes, marker: bytes) -> tuple[bytes, bytes]:
    """An encoded event around its first top-level ``marker`` (a key and its value): the first
    occurrence is the top-level one, since every value before it is an escaped string."""
    at = data.index(marker)
    return data[:at], data[at + len(marker):]


def _offset_marker(place: int) -> bytes:
    return b'"offset":' + str(place).encode()


def _around_offset(data: bytes, place: int) -> tuple[bytes, bytes]:
    """An encoded event before and after its placeholder offset's value."""
    head, tail = _split(data, _offset_marker(place))
    return head + b'"offset":', tail


def _place(event: KeptEvent, offset: int, data: bytes) -> None:
    """Give an announcement made with a placeholder offset its real one (the object is the one
    the caller holds and will send)."""
    event.fields["offset"] = offset
    event.__dict__["offset"] = offset
    event.__dict__["data"] = data


class _Placed:
    """Announcements made with placeholder offsets: their parts for a script, then their real
    offsets from its answer."""

    def __init__(self, events: Sequence[KeptEvent]) -> None:
        self.events = [e for e in events if e.project_id is not None and e.offset is not None]
        self.parts = [_around_offset(e.data, e.offset or 0) for e in self.events]

    def args(self) -> list[Any]:
        out: list[Any] = [len(self.events)]
        for event, (head, tail) in zip(self.events, self.parts, strict=True):
            out += [event.event_id, head, tail]
        return out

    def settle(self, offsets: Sequence[Any]) -> None:
        for event, (head, tail), offset in zip(self.events, self.parts, offsets, strict=True):
            _place(event, int(offset), head + _s(offset).encode() + tail)


class RedisStore:
    """Locks, tasks, event streams and resources in one Redis shared by every server process;
    presence and fan-out between the processes go through it too
    (:mod:`orc_team.server.shared`)."""

    def __init__(self, url: str, events_kept: int = EVENTS_KEPT) -> None:
        self.events_kept = events_kept
        self.address = parse_url(url)
        self.host, self.port, self.db = self.address.host, self.address.port, self.address.db
        self.prefix = PREFIX
        self.channels = f"{PREFIX}{self.db}:"
        """Pub/sub channels are not per database: these are this database's."""
        self.origin = uuid.uuid4().hex[:16]
        """This server process: fan-out messages name it."""
        self.epoch_floor = 0
        # One quick retry (a pooled connection Redis closed when it restarted); past that the
        # request is answered UNAVAILABLE at once rather than after redis-py's backoff.
        self.client = aioredis.Redis(**self.address.options(),
                                     socket_timeout=2.0, socket_connect_timeout=1.0,
                                     retry=Retry(ConstantBackoff(0.02), 1),
                                     redis_connect_func=self._on_connect)
        self.unheard: set[str] = set()
        """Tasks no other process had subscribers for at their last lock change: their lock
        events without a project are not published (:mod:`orc_team.server.shared`)."""
        self.down: str | None = None
        """Why Redis is unreachable (None: it answers): logged once per outage."""
        self.domain = self._open()
        self._scripts = {name: self.client.register_script(getattr(redis_lua, name))
                         for name in ("ACQUIRE", "RELEASE", "EXPIRE", "READ_LOCKS",
                                      "KEEP_EVENT", "FIND_EVENTS", "RECORD_EVENTS", "STREAM",
                                      "NEXT_OFFSET", "PUT_RESOURCE", "LIST_RESOURCES", "WATCH",
                                      "FORGET_ORIGIN")}

    def _open(self) -> str:
        """Reach Redis once at start (a synchronous client: the loop is not running yet), so a
        wrong URL fails ``orc team serve`` at once, and read the lock domain, or make the store:
        a new domain, whose tokens count from 1 (epoch 0) as a new SQLite store's do."""
        import redis as sync_redis

        client = sync_redis.Redis(**self.address.options(), socket_timeout=2.0,
                                  socket_connect_timeout=2.0)
        self.domain = os.urandom(16).hex()  # the store's, if it is made now
        try:
            domain, epoch = client.eval(redis_lua.OPEN, 0, self._header())
            self.epoch_floor = int(epoch or 0)
            return _s(domain)
        except redis.exceptions.RedisError as exc:
            raise StorageError(f"cannot use the Redis store {self.address}: {exc}") from None
        finally:
            client.close()

    async def _on_connect(self, conn: Any) -> None:
        """Every new connection first checks whether Redis restarted (the lock epoch)."""
        await conn.on_connect()
        await conn.send_command("EVAL", redis_lua.BOOT, 0, self._header())
        self.epoch_floor = max(self.epoch_floor, int(await conn.read_response()))

    def describe(self) -> str:
        return str(self.address)

    # -- calls ----------------------------------------------------------------------------------

    def _header(self) -> str:
        return (f"{PREFIX}|{self.origin}|{self.events_kept}|{uuid.uuid4().hex}|{DEDUPE_TTL}|"
                f"{self.epoch_floor}|{self.domain}|{self.channels}")

    async def call(self, name: str, *args: Any) -> Any:
        return await self.guard(lambda: self._scripts[name](args=[self._header(), *args]))

    async def guard(self, call: Callable[[], Awaitable[T]]) -> T:
        """One Redis call; unreachable Redis is StoreUnavailable, logged once per outage."""
        try:
            result = await call()
        except UNREACHABLE as exc:
            raise self.unavailable(exc) from None
        if self.down is not None:
            log.warning("the Redis store %s answers again", self.describe())
            self.down = None
        return result

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        why = str(exc) or type(exc).__name__
        if self.down is None:
            log.error("the Redis store %s is unreachable: %s", self.describe(), why)
        self.down = why
        return StoreUnavailable(f"the team server's store (Redis at {self.host}:{self.port}) "
                                "is unreachable; retry shortly")

    async def health(self) -> str | None:
        """None when Redis answers a PING, else why not."""
        try:
            await self.guard(self.client.ping)
        except StoreUnavailable:
            return self.down or "unreachable"
        return None

    # -- locks ----------------------------------------------------------------------------------

    async def acquire(self, task_id: str, holder: ClientInstance, ttl: int, now: float, *,
                      steal: bool = False, project_id: str | None = None,
                      announce: Announce | None = None) -> Grant:
        base = [task_id, repr(now), ttl, repr(now + ttl), int(steal), _key(holder),
                _holder_json(holder), project_id or ""]
        expected, placed = "", _Placed(())
        for _ in range(RETRIES):
            row = (await self.call("ACQUIRE", *base, expected, *placed.args())).split(b"\0")
            self._heard(task_id, row)
            outcome = _s(row[0])
            previous = _lock(task_id, row)
            project = _s(row[1]) or None
            head = stored_head(row[11])
            if outcome in ("held", "extended"):
                assert previous is not None
                return Grant(outcome, previous, last_head=head)  # type: ignore[arg-type]
            kind = outcome.removeprefix("announce:")
            token = int(row[10])
            self._saw(token)
            lock = LockRecord(task_id, holder, token, ttl, now, now, now + ttl, project)
            expired = previous if kind == "acquired" else None
            stolen = previous if kind == "stolen" else None
            if outcome == kind:  # applied
                offsets = [int(x) for x in row[12:]]
                placed.settle(offsets)
                grant = self._grant(kind, lock, expired, stolen, offsets, head)
                if announce is not None and project is None:
                    announce(grant)  # nothing to keep without a project
                return grant
            grant = Grant(kind, lock, expired, stolen,  # type: ignore[arg-type]
                          _PLACE - 1, _PLACE - 2 if expired is not None else None, head)
            placed = _Placed(announce(grant) if announce else ())
            expected = f"{kind}:{token}:{previous.token if previous else ''}"
        raise StoreUnavailable(f"{task_id}: the lock kept changing hands; retry")

    @staticmethod
    def _grant(kind: str, lock: LockRecord, expired: LockRecord | None,
               stolen: LockRecord | None, offsets: list[int], head: HeadData | None) -> Grant:
        before = offsets[0] if expired is not None and len(offsets) > 1 else None
        offset = offsets[-1] if offsets else None
        return Grant(kind, lock, expired, stolen, offset, before,  # type: ignore[arg-type]
                     head)

    def _heard(self, task_id: str, row: Sequence[Any]) -> None:
        """Remember whether another process has subscribers for the task (the script says)."""
        if row[2] == b"0":
            self.unheard.add(task_id)
        else:
            self.unheard.discard(task_id)

    def _saw(self, token: int) -> None:
        self.epoch_floor = max(self.epoch_floor, token // redis_lua.SHIFT)

    async def release(self, task_id: str, holder: ClientInstance | None, now: float, *,
                      head: HeadData | None = None, announce: Announce | None = None
                      ) -> Release:
        head_json = json.dumps(head, ensure_ascii=False) if head is not None else ""
        base = [task_id, repr(now), _key(holder) if holder is not None else ""]
        expected, placed = "", _Placed(())
        for _ in range(RETRIES):
            row = (await self.call("RELEASE", *base, expected, head_json,
                                   *placed.args())).split(b"\0")
            self._heard(task_id, row)
            outcome = _s(row[0])
            lock = _lock(task_id, row)
            if outcome == "none":
                return Release(False, None)
            if outcome == "expired":
                return Release(False, None, expired=lock)
            if outcome == "other":
                return Release(False, lock)
            assert lock is not None
            last_head = stored_head(row[10])
            if outcome == "released":
                offsets = [int(x) for x in row[11:]]
                placed.settle(offsets)
                done = Release(True, lock, offset=offsets[0] if offsets else None,
                               last_head=last_head)
                if announce is not None and lock.project_id is None:
                    announce(done)  # nothing to keep without a project
                return done
            placed = _Placed(announce(Release(True, lock, offset=_PLACE - 1,
                                              last_head=last_head))
                             if announce else ())
            expected = str(lock.token)
        raise StoreUnavailable(f"{task_id}: the lock kept changing hands; retry")

    async def _locks(self, now: float, task_ids: Sequence[str]) -> list[LockRecord]:
        rows = await self.call("READ_LOCKS", repr(now), *(task_ids or [""]))
        found = [_lock(_s(rows[i]), rows[i + 1].split(b"\0")) for i in range(0, len(rows), 2)]
        return sorted((lock for lock in found if lock is not None), key=lambda x: x.task_id)

    async def get_lock(self, task_id: str, now: float) -> LockRecord | None:
        found = await self._locks(now, [task_id])
        return found[0] if found else None

    async def last_head(self, task_id: str) -> HeadData | None:
        return stored_head(await self.guard(lambda: self.client.get(PREFIX + "head:" + task_id)))

    async def list_locks(self, now: float) -> list[LockRecord]:
        return await self._locks(now, [])

    async def expire(self, now: float) -> list[LockRecord]:
        rows = await self.call("EXPIRE", repr(now))
        found = [_lock(_s(rows[i]), rows[i + 1].split(b"\0")) for i in range(0, len(rows), 2)]
        return sorted((lock for lock in found if lock is not None), key=lambda x: x.task_id)

    # -- tasks and events -----------------------------------------------------------------------

    async def _tasks(self, task_ids: Sequence[str]) -> list[TaskRecord]:
        """The known tasks among ``task_ids``: one round trip, however many."""
        async def read() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for task_id in task_ids:
                    pipe.hmget(PREFIX + "task:" + task_id, "project", "fence")
                    pipe.hgetall(PREFIX + "state:" + task_id)
                return list(await pipe.execute())

        rows = await self.guard(read) if task_ids else []
        found = []
        for i, task_id in enumerate(task_ids):
            meta, state = rows[2 * i], rows[2 * i + 1]
            if meta[1] is not None:
                found.append(TaskRecord(task_id, _s(meta[0]) if meta[0] else None,
                                        {_s(k): protocol.decode(v) for k, v in state.items()},
                                        int(meta[1])))
        return found

    async def get_task(self, task_id: str) -> TaskRecord | None:
        found = await self._tasks([task_id])
        return found[0] if found else None

    async def project_tasks(self, project_id: str) -> list[TaskRecord]:
        members = await self.guard(lambda: self.client.smembers(PREFIX + "ptasks:" +
                                                                project_id))
        return await self._tasks(sorted(_s(m) for m in members))

    async def record_events(self, events: Sequence[NewEvent]
                            ) -> list[Recorded | ProjectMismatch]:
        if not events:
            return []
        args: list[Any] = [len(events)]
        for event in events:
            state = [x for k, v in event.state.items()
                     for x in (k, protocol.encode(v))]
            data = protocol.encode({**event.data, "project_id": _PROJECT, "offset": _PLACE})
            a, rest = _split(data, b'"project_id":' + json.dumps(_PROJECT).encode())
            b, c = _split(rest, _offset_marker(_PLACE))
            args += [event.event_id, event.task_id, event.project_id or "", len(event.state),
                     *state, a + b'"project_id":', b + b'"offset":', c]
        rows = await self.call("RECORD_EVENTS", *args)
        results: list[Recorded | ProjectMismatch] = []
        for event, row in zip(events, rows, strict=True):
            kind, project = _s(row[0]), _s(row[1]) or None
            if kind == "mismatch":
                results.append(ProjectMismatch(event.task_id, project))
                continue
            results.append(self._recorded(event.event_id, row[1:], kind == "duplicate"))
        return results

    @staticmethod
    def _recorded(event_id: str, row: Sequence[Any], duplicate: bool) -> Recorded:
        project, offset, data, epoch = (_s(row[0]) or None, _s(row[1]), bytes(row[2]),
                                        _s(row[3]) or None)
        return Recorded(event_id, project, int(offset) if offset else None, epoch, data,
                        duplicate=duplicate,
                        stored=protocol.decode(data) if duplicate else None)

    async def find_events(self, event_ids: Sequence[str]) -> dict[str, Recorded]:
        ids = list(dict.fromkeys(event_ids))
        rows = await self.call("FIND_EVENTS", *ids) if ids else []
        return {_s(row[0]): self._recorded(_s(row[0]), row[1:], True) for row in rows}

    async def keep_event(self, project_id: str, build: Callable[[int], KeptEvent]
                         ) -> KeptEvent:
        event = build(_PLACE)
        head, tail = _around_offset(event.data, _PLACE)
        offset = int(await self.call("KEEP_EVENT", project_id, event.fields.get("task_id")
                                      or "", event.event_id, head, tail))
        _place(event, offset, head + str(offset).encode() + tail)
        return event

    async def events(self, project_id: str, after: int | None, limit: int
                     ) -> list[tuple[int, bytes]]:
        key = PREFIX + "events:" + project_id
        rows: Any
        if after is None:
            rows = await self.guard(lambda: self.client.xrevrange(key, count=limit))
            rows.reverse()
        else:
            rows = await self.guard(lambda: self.client.xrange(key, f"{after + 1}-0",
                                                                count=limit))
        return [(int(_s(entry_id).split("-")[0]), bytes(fields[b"d"]))
                for entry_id, fields in rows]

    async def stream(self, project_id: str) -> Stream:
        epoch, last, first = await self.call("STREAM", project_id)
        last_offset = int(last)
        return Stream(_s(epoch), last_offset, int(first) if first else last_offset + 1)

    async def projects(self) -> list[str]:
        found = await self.guard(lambda: self.client.smembers(PREFIX + "projects"))
        return sorted(_s(p) for p in found)

    async def next_offset(self, project_id: str) -> int:
        return int(await self.call("NEXT_OFFSET", project_id))

    async def last_offset(self, project_id: str) -> int:
        last = await self.guard(lambda: self.client.hget(PREFIX + "proj:" + project_id,
                                                          "last"))
        return int(last or 0)

    # -- resources ------------------------------------------------------------------------------

    @staticmethod
    def _resource(resource_id: str, version: Any, content: Any, by: Any, at: Any,
                  project: Any) -> Resource:
        return Resource(resource_id, int(version), None if content is None else _s(content),
                        _s(by), protocol.iso(float(at)), _s(project) or None)

    async def get_resource(self, resource_id: str, version: int | None = None
                           ) -> Resource | None:
        key = PREFIX + "res:" + resource_id
        if version is None:
            latest = await self.guard(lambda: self.client.hget(key, "latest"))
            if latest is None:
                return None
            version = int(latest)
        v = str(version)
        f = await self.guard(lambda: self.client.hmget(key, "c:" + v, "b:" + v, "t:" + v,
                                                        "p:" + v))
        if f[0] is None:
            return None
        return self._resource(resource_id, version, *f)

    async def list_resources(self) -> list[Resource]:
        rows = await self.call("LIST_RESOURCES")
        return sorted((self._resource(_s(r[0]), r[1], None, r[2], r[3], r[4]) for r in rows),
                      key=lambda r: r.resource_id)

    async def put_resource(self, resource_id: str, content: str, expected_version: int,
                           updated_by: str, now: float, *, project_id: str | None = None,
                           announce: AnnounceResource | None = None
                           ) -> tuple[Resource, KeptEvent | None]:
        project = project_id
        if project is None and expected_version > 0:  # the version it replaces says
            base = await self.get_resource(resource_id, expected_version)
            project = base.project_id if base is not None else None
        made = Resource(resource_id, expected_version + 1, content, updated_by,
                        protocol.iso(now), project)
        event = announce(made, _PLACE if project else None) if announce else None
        placed = _Placed([event] if event is not None else [])
        row = await self.call("PUT_RESOURCE", resource_id, content, expected_version,
                               updated_by, repr(now), project_id or "", *placed.args())
        outcome = _s(row[0])
        if outcome == "missing":
            raise NoSuchResource(resource_id)
        if outcome == "conflict":
            raise VersionConflict(self._resource(resource_id, *row[1:]), expected_version)
        placed.settle([row[3]] if _s(row[3]) else [])
        return made, event

    async def share(self, server: Server) -> None:
        """Run this process's share of the fan-out and presence until cancelled."""
        relay = Relay(self, server)
        server.events.relay = relay
        server.presence.shared = relay
        server.hub.watcher = relay
        await relay.run()

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # never holds up a shutdown
            await asyncio.wait_for(self.client.aclose(), 2.0)
