"""Shared resources: versioned documents with optimistic concurrency, for both the WebSocket
(``resource_*`` messages) and HTTP (``/api/resources``).

The compare-and-set itself happens in the store, in one transaction with the announcement it
keeps: two writers starting from the same version cannot both win, and a restart loses neither a
version nor its ``resource.updated``.  This service turns the store's answers into the
protocol's: the new version, ``NOT_FOUND``, or ``CONFLICT`` carrying the whole current version
so the loser can diff and merge without another round trip.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from orc_git.errors import GitFailed

from orc_team import protocol
from orc_team.protocol import CONFLICT, INTERNAL, NOT_FOUND, ProtocolError, Resource
from orc_team.server.events import EventBus
from orc_team.server.store import (
    ClientInstance,
    KeptEvent,
    NoSuchResource,
    Store,
    VersionConflict,
)
from orc_team.textmerge import three_way


def conflict(exc: VersionConflict) -> ProtocolError:
    current = exc.current
    if exc.expected == 0:
        what = f"{current.resource_id} already exists (version {current.version})"
    else:
        what = (f"{current.resource_id} was changed meanwhile: it is at version "
                f"{current.version}, not {exc.expected}")
    return ProtocolError(CONFLICT, f"{what}, last saved by {current.updated_by} at "
                         f"{current.updated_at}; nothing was saved",
                         extra={"current": current.to_json(),
                                "expected_version": exc.expected})


class ResourceService:
    def __init__(self, store: Store, events: EventBus) -> None:
        self.store = store
        self.events = events

    async def get(self, resource_id: str, version: int | None = None) -> Resource:
        found = await self.store.get_resource(resource_id, version)
        if found is None:
            which = "" if version is None else f" version {version}"
            raise ProtocolError(NOT_FOUND, f"Resource {resource_id}{which} not found")
        return found

    async def list(self) -> list[Resource]:
        return await self.store.list_resources()

    async def put(self, resource_id: str, content: str, expected_version: int,
                  author: ClientInstance, project_id: str | None) -> Resource:
        """Keep the next version, or refuse with CONFLICT / NOT_FOUND; a new version is
        announced to its project's subscribers once stored."""
        def announce(made: Resource, offset: int | None) -> KeptEvent:
            return EventBus.announcement(
                protocol.RESOURCE_UPDATED, None, made.project_id,
                {"resource_id": made.resource_id, "version": made.version,
                 "updated_by": made.updated_by},
                user=author.user, user_name=author.name, offset=offset)

        try:
            made, event = await self.store.put_resource(
                resource_id, content, expected_version, author.user, time.time(),
                project_id=project_id, announce=announce)
        except VersionConflict as exc:
            raise conflict(exc) from None
        except NoSuchResource:
            raise ProtocolError(NOT_FOUND, f"Resource {resource_id} not found: create it "
                                "with expected_version 0") from None
        if event is not None:
            self.events.send(event, None)
        return made

    async def merge(self, resource_id: str, base_version: int, mine: str) -> dict[str, Any]:
        """The ``merged`` reply: ``mine`` (made from ``base_version``; 0, a new resource, has
        an empty base) merged with the current version by
        :func:`orc_team.textmerge.three_way`, as ``orc resource edit`` merges."""
        current = await self.get(resource_id)
        base = (await self.get(resource_id, base_version)).content if base_version else ""
        label = f"version {current.version} ({current.updated_by})"
        try:
            merged, conflicts = await asyncio.to_thread(three_way, base or "", mine,
                                                        current.content or "", label)
        except GitFailed as exc:
            raise ProtocolError(INTERNAL, f"the server could not merge: {exc}") from None
        return {"resource_id": resource_id, "version": current.version,
                "base_version": base_version, "content": merged, "conflicts": conflicts}
