"""Task locks: permissions, replies and lock events on top of the store's compare-and-set.

The store decides (grant, extend, steal, refuse) in one transaction; this module decides who may
force, answers the requester first, then announces ``lock.acquired / released / expired /
stolen`` to the task's and project's subscribers, and to the connections of a holder who just
lost a lease, so a client learns at once that it no longer holds what it thinks it holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from orc_team import protocol
from orc_team.protocol import (
    FORBIDDEN,
    LOCK_ACQUIRED,
    LOCK_EXPIRED,
    LOCK_RELEASED,
    LOCK_STOLEN,
    NOT_LOCK_OWNER,
    HeadData,
    Id,
    LockAcquiredPayload,
    LockExpiredPayload,
    LockObject,
    LockReleasedPayload,
    LockResult,
    LockStolenPayload,
    ProtocolError,
)
from orc_team.server.connection import Connection
from orc_team.server.events import EventBus
from orc_team.server.hub import Hub
from orc_team.server.store import Grant, KeptEvent, LockRecord, Release, Store, StoreUnavailable

log = logging.getLogger("orc_team.server")

Reply = Callable[[dict[str, Any]], None]


def lock_object(lock: LockRecord, domain: str) -> LockObject:
    """The wire's lock object; ``lock_domain`` is the store's, where ``token`` counts."""
    return LockObject(
        task_id=lock.task_id, project_id=lock.project_id, owner=lock.holder.user,
        owner_name=lock.holder.name, owner_email=lock.holder.email, client=lock.holder.client,
        token=lock.token, ttl=lock.ttl, acquired_at=protocol.iso(lock.acquired_at),
        heartbeat_at=protocol.iso(lock.heartbeat_at), expires_at=protocol.iso(lock.expires_at),
        lock_domain=domain)


def lock_json(lock: LockRecord, domain: str) -> dict[str, Any]:
    return lock_object(lock, domain).to_json()


def _who(lock: LockRecord) -> str:
    name = lock.holder.name or lock.holder.user
    return f"{name} ({lock.holder.user}, client {lock.holder.client})"


class LockService:
    def __init__(self, store: Store, events: EventBus, hub: Hub) -> None:
        self.store = store
        self.events = events
        self.hub = hub

    async def lock(self, conn: Connection, req_id: Id | None, reply: Reply, task_id: str,
                   ttl: int, force: bool, project_id: str | None) -> None:
        """Acquire, or extend when ``conn`` is already the holder (the heartbeat).  The
        announcements are made inside the grant's transaction (and kept with it), then sent:
        the lease it replaced first, then the requester's reply, then the grant."""
        made: list[tuple[KeptEvent, set[Connection]]] = []

        def announce(grant: Grant) -> list[KeptEvent]:
            made.clear()  # a store may decide again (another process changed the lock)
            if grant.expired is not None:
                made.append(self._expired(grant.expired, grant.expired_offset))
            made.append(self._granted(conn, grant))
            return [event for event, _ in made]

        grant = await self.store.acquire(task_id, conn.holder, ttl, time.time(),
                                         steal=force and conn.claims.admin,
                                         project_id=project_id, announce=announce)
        if grant.expired is not None:  # announced before the reply, as the lease it was
            event, also = made.pop(0)
            self.events.send(event, task_id, also)
        lock, last_head = grant.lock, grant.last_head
        if not grant.granted:
            if force:
                raise ProtocolError(FORBIDDEN, f"force needs the admin role; {task_id} is held "
                                    f"by {_who(lock)}", req_id)
            reply(LockResult(lock_object(lock, self.store.domain),
                             last_head=last_head).to_json())
            return
        stolen = grant.stolen
        reply(LockResult(lock_object(lock, self.store.domain), acquired=True,
                         extended=grant.outcome == "extended",
                         stolen_from=stolen.holder.user if stolen else None,
                         last_head=last_head).to_json())
        for event, also in made:
            self.events.send(event, task_id, also)

    def _granted(self, conn: Connection, grant: Grant) -> tuple[KeptEvent, set[Connection]]:
        lock, stolen = grant.lock, grant.stolen
        acquired: LockAcquiredPayload = {
            "task_id": lock.task_id, "owner": conn.user, "owner_name": conn.claims.name,
            "client": lock.holder.client, "ttl": lock.ttl, "token": lock.token,
            "expires_at": protocol.iso(lock.expires_at)}
        if stolen is None:
            return self.events.announcement(
                LOCK_ACQUIRED, lock.task_id, lock.project_id, acquired, user=conn.user,
                user_name=conn.claims.name, offset=grant.offset), set()
        log.info("%s: %s stole the lock from %s", lock.task_id, conn.user, _who(stolen))
        payload: LockStolenPayload = {
            **acquired, "old_owner": stolen.holder.user, "old_client": stolen.holder.client,
            "old_token": stolen.token, "new_owner": conn.user}
        return (self.events.announcement(LOCK_STOLEN, lock.task_id, lock.project_id, payload,
                                         user=conn.user, user_name=conn.claims.name,
                                         offset=grant.offset),
                self.hub.holder_connections(stolen.holder.key))

    async def unlock(self, conn: Connection, req_id: Id | None, reply: Reply, task_id: str,
                     force: bool, head: HeadData | None = None) -> None:
        """Release; ``head`` (the releaser's ``HEAD``) becomes the task's last head, which
        the announcement carries; an unlock without one keeps the last head there was."""
        forced = force and conn.claims.admin
        made: list[tuple[KeptEvent, set[Connection]]] = []
        now = time.time()
        if head is not None:
            head = {**head, "by": conn.user, "at": protocol.iso(now)}

        def announce(done: Release) -> list[KeptEvent]:
            made.clear()  # a store may decide again (another process changed the lock)
            made.append(self._released(conn, done))
            return [made[0][0]]

        result = await self.store.release(task_id, None if forced else conn.holder, now,
                                          head=head, announce=announce)
        if result.expired is not None:
            await self._announce_expired(result.expired)
        lock = result.lock
        if lock is None:
            reply({"released": False, "task_id": task_id})
            return
        if not result.released:
            if force:
                raise ProtocolError(FORBIDDEN, f"releasing another holder's lock needs the admin "
                                    f"role; {task_id} is held by {_who(lock)}", req_id)
            raise ProtocolError(NOT_LOCK_OWNER, f"{task_id} is held by {_who(lock)}", req_id)
        reply({"released": True, "task_id": task_id, "token": lock.token})
        for event, also in made:
            self.events.send(event, task_id, also)

    def _released(self, conn: Connection, done: Release
                  ) -> tuple[KeptEvent, set[Connection]]:
        lock = done.lock
        assert lock is not None
        by_other = not lock.held_by(conn.holder)
        payload: LockReleasedPayload = {
            "task_id": lock.task_id, "owner": lock.holder.user, "client": lock.holder.client,
            "token": lock.token, "forced_by": conn.user if by_other else None,
            "last_head": done.last_head}
        also = self.hub.holder_connections(lock.holder.key) if by_other else set()
        return (self.events.announcement(LOCK_RELEASED, lock.task_id, lock.project_id, payload,
                                         user=conn.user, user_name=conn.claims.name,
                                         offset=done.offset), also)

    def _expired(self, lock: LockRecord, offset: int | None
                 ) -> tuple[KeptEvent, set[Connection]]:
        log.info("%s: the lock of %s expired", lock.task_id, _who(lock))
        payload: LockExpiredPayload = {
            "task_id": lock.task_id, "previous_owner": lock.holder.user,
            "previous_client": lock.holder.client, "token": lock.token,
            "expired_at": protocol.iso(lock.expires_at)}
        return (self.events.announcement(LOCK_EXPIRED, lock.task_id, lock.project_id, payload,
                                         user=lock.holder.user, user_name=lock.holder.name,
                                         offset=offset),
                self.hub.holder_connections(lock.holder.key))

    async def _announce_expired(self, lock: LockRecord) -> None:
        """A lease found expired outside a grant (the sweeper, a release): its offset and its
        announcement are taken and kept in one transaction."""
        if lock.project_id is None:
            event, also = self._expired(lock, None)
        else:
            made: list[set[Connection]] = []

            def build(offset: int) -> KeptEvent:
                kept, also = self._expired(lock, offset)
                made.append(also)
                return kept

            event = await self.store.keep_event(lock.project_id, build)
            also = made[0]
        self.events.send(event, lock.task_id, also)

    async def sweep(self) -> int:
        expired = await self.store.expire(time.time())
        for lock in expired:
            await self._announce_expired(lock)
        return len(expired)

    async def run_sweeper(self, interval: float) -> None:
        """Remove expired locks every ``interval`` seconds, so each is announced within it."""
        while True:
            try:
                await self.sweep()
            except StoreUnavailable:
                pass  # the store logs its outage once
            except Exception:  # a failing sweep must not end sweeping
                log.exception("lock expiry sweep failed")
            await asyncio.sleep(interval)
