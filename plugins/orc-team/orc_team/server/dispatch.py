"""One client message in, exactly one reply out (when it has an ``id``).

The order of checks is the defence: size first (nothing large is parsed for its content), then
JSON, then the rate limit of the message's class (lock traffic has its own bucket, so heartbeats
pass through a flood), then the fields.  Every failure becomes an ``error`` reply carrying the
request's ``id``; an unexpected exception becomes ``INTERNAL``.  Nothing here closes a connection
except running out of the abuse allowance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from orc_team import protocol
from orc_team.protocol import (
    FORBIDDEN,
    INTERNAL,
    INVALID_MESSAGE,
    NOT_FOUND,
    RATE_LIMITED,
    REPLY_TYPES,
    RESERVED_EVENT_PREFIXES,
    Envelope,
    Id,
    InvalidText,
    ProtocolError,
)
from orc_team.server.config import ServerConfig
from orc_team.server.connection import CLOSE_POLICY, Connection
from orc_team.server.events import EventBus
from orc_team.server.fields import Fields
from orc_team.server.hub import Hub
from orc_team.server.locks import LockService, lock_json
from orc_team.server.presence import Presence
from orc_team.server.store import Store

log = logging.getLogger("orc_team.server")

CLOSE_INVALID_TEXT = 1007  # RFC 6455: a text frame that is not UTF-8 fails the connection
CONTROL_TYPES = frozenset({protocol.LOCK, protocol.UNLOCK, protocol.PING})
"""Lock traffic: rate-limited in its own bucket, so heartbeats pass through a flood."""
OVERSIZE_COST = 25.0


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

    async def handle(self, conn: Connection, raw: bytes, binary: bool = False) -> None:
        req: Request | None = None
        req_id: Id | None = None
        try:
            if len(raw) > self.config.max_message:
                refusal = protocol.oversized(raw, self.config.max_message)
                req_id = refusal.req_id
                self._charge(conn, False, OVERSIZE_COST, req_id)
                raise refusal
            try:
                if binary:
                    raise ProtocolError(INVALID_MESSAGE, "binary frames are not accepted; "
                                        "send JSON text")
                env = protocol.parse(raw)
            except ProtocolError as exc:
                self._charge(conn, False, 1.0, exc.req_id)
                raise
            req_id = env.id
            self._charge(conn, env.type in CONTROL_TYPES, 1.0, req_id)
            req = Request(conn, env)
            await getattr(self, f"on_{env.type}")(req)
        except InvalidText as exc:
            conn.drop(exc.message, CLOSE_INVALID_TEXT)
        except ProtocolError as exc:
            if req is None or not req.replied:
                conn.send(protocol.error(req_id if exc.req_id is None else exc.req_id,
                                         exc.code, exc.message))
        except Exception:
            log.exception("%r: failed to handle a message", conn)
            if req is None or not req.replied:
                conn.send(protocol.error(req_id, INTERNAL, "internal server error"))

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
        self.presence.touch(req.conn)
        kind, key = req.fields.one_target()
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
        if not self.hub.subscribe(req.conn, kind, key):
            raise ProtocolError(RATE_LIMITED, f"at most {self.hub.max_subscriptions} "
                                "subscriptions per connection", req.env.id)
        req.reply({f"{kind}_id": key, "current_state": state})

    async def on_unsubscribe(self, req: Request) -> None:
        self.presence.touch(req.conn)
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
        task_id, force = f.task_id(), f.flag("force")
        await self.locks.unlock(req.conn, req.env.id, req.reply, task_id, force)

    async def on_event(self, req: Request) -> None:
        self.presence.touch(req.conn)
        f = req.fields
        event_type, task_id = f.event_type(), f.task_id()
        project_id, payload = f.name("project_id"), f.payload()
        if event_type.startswith(RESERVED_EVENT_PREFIXES):
            raise ProtocolError(FORBIDDEN, f"{event_type}: lock.* and presence.* events are "
                                "the server's own", req.env.id)
        conn = req.conn
        stamps = await self.events.publish(event_type, task_id, project_id, payload,
                                           holder=conn.holder, admin=conn.claims.admin)
        if req.env.id is not None:
            req.reply(stamps)
