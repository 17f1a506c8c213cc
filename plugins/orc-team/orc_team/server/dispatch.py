"""One client message in, exactly one reply out (when it has an ``id``).

The order of checks is the defence: size first (nothing past ``max_message`` is used, and
nothing past ``MAX_RESOURCE_MESSAGE_BYTES`` is even parsed: only a ``resource_put``, whose 64 KiB
of content may take six times that once escaped, is read between the two, and charged in
proportion), then JSON, then the rate limit of the message's class (lock traffic has its own
bucket, so heartbeats pass through a flood), then the fields.  Every failure becomes an
``error`` reply carrying the request's ``id``; an unexpected exception becomes ``INTERNAL``.
Nothing here closes a connection except running out of the abuse allowance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Literal, NoReturn

from orc_team import protocol
from orc_team.protocol import (
    FORBIDDEN,
    INTERNAL,
    INVALID_MESSAGE,
    MAX_RESOURCE_MESSAGE_BYTES,
    NOT_FOUND,
    RATE_LIMITED,
    REPLY_TYPES,
    RESERVED_EVENT_PREFIXES,
    UNAVAILABLE,
    Envelope,
    Id,
    InvalidText,
    ProtocolError,
)
from orc_team.server.config import ServerConfig
from orc_team.server.connection import CLOSE_POLICY, Connection
from orc_team.server.events import EventBus, Publish, refusal
from orc_team.server.fields import EVENT_ID, Fields
from orc_team.server.hub import Hub
from orc_team.server.locks import LockService, lock_json
from orc_team.server.presence import Presence
from orc_team.server.replay import replay, start_after
from orc_team.server.resources import ResourceService
from orc_team.server.store import Store, StoreUnavailable

log = logging.getLogger("orc_team.server")

CLOSE_INVALID_TEXT = 1007  # RFC 6455: a text frame that is not UTF-8 fails the connection
CONTROL_TYPES = frozenset({protocol.LOCK, protocol.UNLOCK, protocol.PING})
"""Lock traffic: rate-limited in its own bucket, so heartbeats pass through a flood."""
OVERSIZE_COST = 25.0
LARGE_TYPES = frozenset({protocol.RESOURCE_PUT, protocol.RESOURCE_MERGE})
"""Messages read up to MAX_RESOURCE_MESSAGE_BYTES: they carry a resource's whole content."""


class Request:
    """A parsed message and its one reply."""

    def __init__(self, conn: Connection, env: Envelope) -> None:
        self.conn = conn
        self.env = env
        self.fields = Fields(env)
        self.replied = False

    def reply(self, data: Mapping[str, Any] | None = None) -> None:
        """Marked replied only once sent: a reply that fails to encode leaves the request to
        the dispatcher's INTERNAL error instead of no answer at all."""
        if not self.replied:
            self.conn.send(protocol.message(REPLY_TYPES[self.env.type], self.env.id, data))
            self.replied = True


class Dispatcher:
    def __init__(self, config: ServerConfig, store: Store, hub: Hub, events: EventBus,
                 locks: LockService, presence: Presence) -> None:
        self.config = config
        self.store = store
        self.hub = hub
        self.events = events
        self.locks = locks
        self.presence = presence
        self.resources = ResourceService(store, events)

    async def handle(self, conn: Connection, raw: bytes, binary: bool = False) -> None:
        req: Request | None = None
        req_id: Id | None = None
        try:
            limit = self.config.max_message
            large = len(raw) > limit
            if large and (binary or len(raw) > max(limit, MAX_RESOURCE_MESSAGE_BYTES)):
                self._refuse_large(conn, raw)
            try:
                if binary:
                    raise ProtocolError(INVALID_MESSAGE, "binary frames are not accepted; "
                                        "send JSON text")
                env = protocol.parse(raw)
            except InvalidText:
                raise
            except ProtocolError as exc:
                if large:
                    self._refuse_large(conn, raw)
                self._charge(conn, False, 1.0, exc.req_id)
                raise
            if large and env.type not in LARGE_TYPES:
                self._refuse_large(conn, raw)
            req_id = env.id
            self._charge(conn, env.type in CONTROL_TYPES, max(1.0, len(raw) / limit), req_id)
            req = Request(conn, env)
            await getattr(self, f"on_{env.type}")(req)
        except InvalidText as exc:
            conn.drop(exc.message, CLOSE_INVALID_TEXT)
        except ProtocolError as exc:
            if req is None or not req.replied:
                conn.send(protocol.error(req_id if exc.req_id is None else exc.req_id,
                                         exc.code, exc.message, exc.extra))
        except StoreUnavailable as exc:  # logged once per outage by the store
            if req is None or not req.replied:
                conn.send(protocol.error(req_id, UNAVAILABLE, str(exc)))
        except Exception:
            log.exception("%r: failed to handle a message", conn)
            if req is None or not req.replied:
                conn.send(protocol.error(req_id, INTERNAL, "internal server error"))

    def _refuse_large(self, conn: Connection, raw: bytes) -> NoReturn:
        """Past ``max_message``: only a ``resource_put`` (up to MAX_RESOURCE_MESSAGE_BYTES,
        room for 64 KiB of content however it is escaped) is read."""
        refusal = protocol.oversized(raw, self.config.max_message)
        self._charge(conn, False, OVERSIZE_COST, refusal.req_id)
        raise refusal

    def _charge(self, conn: Connection, control: bool, cost: float, req_id: Id | None) -> None:
        bucket = conn.control if control else conn.general
        if bucket.take(cost):
            return
        if not conn.strikes.take(1.0):
            conn.drop("flooding past the rate limit", CLOSE_POLICY)
        raise ProtocolError(RATE_LIMITED, "too many messages; slow down", req_id)

    async def on_ping(self, req: Request) -> None:
        req.reply()

    async def on_subscribe(self, req: Request) -> None:
        """With ``since``, a project subscription replays what was kept after it (see
        :mod:`orc_team.server.replay`) before its live events; a task subscription takes no
        ``since`` (a task's events are replayed through its project)."""
        self.presence.touch(req.conn)
        if req.fields.flag(protocol.ALL_PROJECTS):
            await self._subscribe_all(req)
            return
        kind, key = req.fields.one_target()
        since, epoch = req.fields.since(), req.fields.epoch()
        if kind == "task" and (since is not None or epoch is not None):
            raise req.fields.fail("data.since and data.epoch go with data.project_id (replay "
                                  "is per project; subscribe to the task's project)")
        now = time.time()
        if kind == "task":
            task = await self.store.get_task(key)
            if task is None:
                raise ProtocolError(NOT_FOUND, f"Task {key} not found", req.env.id)
            lock = await self.store.get_lock(key, now)
            state = {**task.state, "project_id": task.project_id,
                     "lock": lock_json(lock, self.store.domain) if lock else None}
        else:
            tasks = await self.store.project_tasks(key)
            locks = {lock.task_id: lock for lock in await self.store.list_locks(now)}
            state = {"offset": await self.store.last_offset(key), "tasks": [
                {"task_id": t.task_id, **t.state,
                 "lock": lock_json(locks[t.task_id], self.store.domain)
                 if t.task_id in locks else None}
                for t in tasks]}
        if kind == "task":
            self._subscribe(req, kind, key)
            if self.hub.watcher is not None:  # known to the other processes before the reply
                await self.hub.watcher.watch(key)
            req.reply({"task_id": key, "current_state": state})
            return
        stream = await self.store.stream(key)
        after, truncated = (None, False) if since is None else start_after(stream, since, epoch)
        held = req.conn.held_room()
        if after is not None:  # before subscribing: from now on, its live events are held
            req.conn.replays[key] = held
        try:
            self._subscribe(req, kind, key)
            req.reply({"project_id": key, "current_state": state, "epoch": stream.epoch,
                       "last_offset": stream.last_offset, "truncated": truncated})
        except BaseException:
            req.conn.replays.pop(key, None)
            raise
        if after is not None:
            await replay(req.conn, self.store, key, after, held)

    async def _subscribe_all(self, req: Request) -> None:
        """Every project's live events; the reply lists the projects' streams so the client
        catches up on each over HTTP (``GET /api/events``), deduplicating by offset."""
        f = req.fields
        if any(f.data.get(key) is not None for key in ("task_id", "project_id", "since")):
            raise f.fail("data.all_projects takes no task_id, project_id or since (catch up "
                         "with GET /api/events per project)")
        self.hub.watchers.add(req.conn)  # first: nothing kept after the listing is missed
        projects = []
        for project in await self.store.projects():
            stream = await self.store.stream(project)
            projects.append({"project_id": project, "epoch": stream.epoch,
                             "last_offset": stream.last_offset})
        req.reply({protocol.ALL_PROJECTS: True, "projects": projects})

    def _subscribe(self, req: Request, kind: Literal["task", "project"], key: str) -> None:
        if not self.hub.subscribe(req.conn, kind, key):
            raise ProtocolError(RATE_LIMITED, f"at most {self.hub.max_subscriptions} "
                                "subscriptions per connection", req.env.id)

    async def on_unsubscribe(self, req: Request) -> None:
        self.presence.touch(req.conn)
        if req.fields.flag(protocol.ALL_PROJECTS):
            was = req.conn in self.hub.watchers
            self.hub.watchers.discard(req.conn)
            req.reply({protocol.ALL_PROJECTS: True, "was_subscribed": was})
            return
        kind, key = req.fields.one_target()
        was = self.hub.unsubscribe(req.conn, kind, key)
        req.reply({f"{kind}_id": key, "was_subscribed": was})

    async def on_presence(self, req: Request) -> None:
        status = req.fields.choice("status", protocol.PRESENCE_STATUSES)
        active_task = req.fields.name("active_task")
        if status == "active" and active_task is None:
            raise req.fields.fail("status active needs data.active_task")
        data = self.presence.update(req.conn, status, active_task)
        if req.env.id is not None:
            req.reply(data)

    async def on_lock(self, req: Request) -> None:
        self.presence.touch(req.conn)
        f = req.fields
        task_id, ttl, force, project = f.task_id(), f.ttl(), f.flag("force"), f.name("project_id")
        await self.locks.lock(req.conn, req.env.id, req.reply, task_id, ttl, force, project)

    async def on_unlock(self, req: Request) -> None:
        self.presence.touch(req.conn)
        f = req.fields
        task_id, force, head = f.task_id(), f.flag("force"), f.head()
        await self.locks.unlock(req.conn, req.env.id, req.reply, task_id, force, head)

    async def on_event(self, req: Request) -> None:
        """One event; a refusal is the reply's error, as it always was."""
        self.presence.touch(req.conn)
        item = _publish(req.fields)
        if isinstance(item, ProtocolError):
            raise item
        conn = req.conn
        [ack] = await self.events.publish([item], sender=conn.holder, admin=conn.claims.admin)
        error = ack.get("error")
        if error is not None:
            raise ProtocolError(error["code"], error["message"], req.env.id)
        if req.env.id is not None:
            req.reply(ack)

    async def on_events(self, req: Request) -> None:
        """A batch: one ``acks`` in the same order; a refused entry gets its error there and
        the others are kept (one store transaction)."""
        self.presence.touch(req.conn)
        entries = req.fields.data.get("events")
        if (not isinstance(entries, list)
                or not 1 <= len(entries) <= protocol.MAX_BATCH_EVENTS):
            raise req.fields.fail("data.events must be a list of 1 to "
                                  f"{protocol.MAX_BATCH_EVENTS} events")
        acks: list[dict[str, Any] | None] = [None] * len(entries)
        valid: list[tuple[int, Publish]] = []
        for i, entry in enumerate(entries):
            item = (_publish(Fields(Envelope(protocol.EVENT, req.env.id, entry),
                                    f"data.events[{i}]")) if isinstance(entry, dict) else
                    ProtocolError(INVALID_MESSAGE, f"data.events[{i}] must be an object"))
            if isinstance(item, Publish):
                valid.append((i, item))
            else:
                acks[i] = refusal(_echo(entry), item)
        conn = req.conn
        kept = await self.events.publish([item for _, item in valid], sender=conn.holder,
                                         admin=conn.claims.admin)
        for (i, _), ack in zip(valid, kept, strict=True):
            acks[i] = ack
        if req.env.id is not None:
            req.reply({"acks": acks})

    async def on_resource_get(self, req: Request) -> None:
        self.presence.touch(req.conn)
        f = req.fields
        resource_id, version = f.resource_id(), f.version("version", lowest=1)
        found = await self.resources.get(resource_id, version)
        req.reply(found.to_json())

    async def on_resource_list(self, req: Request) -> None:
        self.presence.touch(req.conn)
        req.reply({"resources": [r.to_json() for r in await self.resources.list()]})

    async def on_resource_put(self, req: Request) -> None:
        """Any authenticated member may write; the version check is the only guard."""
        self.presence.touch(req.conn)
        f = req.fields
        resource_id, content = f.resource_id(), f.content()
        expected = f.version("expected_version", lowest=0, required="the version you "
                             "started from (0 creates the resource)")
        assert expected is not None
        project = f.name("project_id")
        made = await self.resources.put(resource_id, content, expected, req.conn.holder,
                                        project)
        req.reply(made.to_json())

    async def on_resource_merge(self, req: Request) -> None:
        """Charged as the size of its content, like a put: each one runs ``git merge-file``."""
        self.presence.touch(req.conn)
        f = req.fields
        resource_id, content = f.resource_id(), f.content()
        base = f.version("base_version", lowest=0, required="the version your content was "
                         "made from")
        assert base is not None
        req.reply(await self.resources.merge(resource_id, base, content))


def _echo(entry: object) -> str | None:
    """A refused entry's event_id, when it is one the client could have sent."""
    value = entry.get("event_id") if isinstance(entry, dict) else None
    return value if isinstance(value, str) and EVENT_ID.fullmatch(value) else None


def _publish(f: Fields) -> Publish | ProtocolError:
    """An event's fields, validated, or why not (its id echoed when it could be read)."""
    try:
        event_type, task_id = f.event_type(), f.task_id()
        project_id, payload = f.name("project_id"), f.payload()
        event_id, made_at = f.event_id(), f.made_at()
    except ProtocolError as exc:
        return exc
    if event_type.startswith(RESERVED_EVENT_PREFIXES):
        return ProtocolError(FORBIDDEN, f"{event_type}: lock.*, presence.* and resource.* "
                             "events are the server's own", f.req_id)
    return Publish(event_type, task_id, project_id, payload, event_id, made_at)
