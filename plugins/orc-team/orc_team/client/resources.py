"""The team server's shared resources over HTTP: list, get (any version), compare-and-set put.

HTTP rather than the WebSocket, like the other reads (:mod:`orc_team.client.http`): an
``orc resource`` command is one or two requests, with no presence churn for others to see.  The
server's refusals become orc-git errors: 404 NotFound, 409 :class:`ResourceConflict` (which
carries the whole current version, so a caller can diff and merge without asking again).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from orc_git.errors import ConfigError, Conflict, NotFound

from orc_team.client.http import HttpReader, http_failure
from orc_team.client.settings import ClientSettings
from orc_team.protocol import Resource, encode


class ResourceConflict(Conflict):
    def __init__(self, message: str, current: Resource, expected: int) -> None:
        super().__init__(message)
        self.current = current
        self.expected = expected


def _doc(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    return doc if isinstance(doc, dict) else {}


class ResourceClient:
    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.http = HttpReader(settings)

    def close(self) -> None:
        self.http.close()

    def _path(self, resource_id: str) -> str:
        return f"/api/resources/{quote(resource_id, safe='')}"

    def _answer(self, status: int, body: bytes, path: str) -> Resource:
        doc = _doc(body)
        if status == 200 and isinstance(doc.get("version"), int):
            return Resource.from_json(doc)
        error = doc.get("error")
        if isinstance(error, dict):
            message = str(error.get("message", ""))
            if status == 404 and error.get("code") == "NOT_FOUND":
                raise NotFound(message)
            current = error.get("current")
            if status == 409 and isinstance(current, dict):
                expected = error.get("expected_version")
                raise ResourceConflict(message, Resource.from_json(current),
                                       expected if isinstance(expected, int) else -1)
        if status == 200:
            raise ConfigError(f"{self.settings.base_url} answered {path} without a resource; "
                              "is it an orc team server of this version?")
        raise http_failure(status, body, self.settings.base_url, path)

    def list(self) -> list[Resource]:
        doc = self.http.get("/api/resources")
        found = doc.get("resources")
        return [Resource.from_json(r) for r in found if isinstance(r, dict)] if isinstance(
            found, list) else []

    def get(self, resource_id: str, version: int | None = None) -> Resource:
        path = self._path(resource_id) + ("" if version is None else f"?version={version}")
        return self._answer(*self.http.exchange("GET", path), path)

    def put(self, resource_id: str, content: str, expected_version: int,
            project_id: str | None = None) -> Resource:
        """Save ``content`` as the version after ``expected_version`` (0 creates)."""
        body: dict[str, Any] = {"content": content}
        if project_id is not None:
            body["project_id"] = project_id
        path = self._path(resource_id)
        answer = self.http.exchange("PUT", path, encode(body), {
            "Content-Type": "application/json", "If-Match": str(expected_version)})
        return self._answer(*answer, path)
