"""Reading the server's JSON views (``GET /api/locks[/TASK]``, ``/api/events``, ``/api/presence``).

Reads go over plain HTTP rather than the WebSocket: ``orc lock status`` or ``list`` then costs one
request, with no WebSocket handshake and no presence churn (online/offline) for other users to
see.  One keep-alive connection is reused, so ``orc lock wait`` polling every 50 ms costs a
request each, not a TCP handshake each.  Unreachable means LockerUnavailable; a refused token is a
ConfigError (the server is there and said no).
"""

from __future__ import annotations

import http.client
import json
import threading
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from orc_git.errors import ConfigError, LockerUnavailable, OrcError

from orc_team.client.settings import ClientSettings
from orc_team.protocol import http_error_text


class HttpReader:
    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        parts = urlsplit(settings.http_base)
        self._secure = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._secure else 80)
        self._prefix = parts.path
        self._conn: http.client.HTTPConnection | None = None
        self._mutex = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._secure else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.settings.request_timeout)
        return self._conn

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def exchange(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """One request (``path`` under the base URL) and its status and body.  A kept-alive
        connection the server has closed meanwhile is retried once on a fresh one; a PUT too,
        since resource writes are compare-and-set: a repeat of one that did land is refused
        with CONFLICT, never applied twice."""
        sent = {"Authorization": f"Bearer {self.settings.token}", "Accept": "application/json",
                **(headers or {})}
        url = self._prefix + path
        with self._mutex:
            for attempt in (1, 2):
                reused = self._conn is not None
                conn = self._connection()
                try:
                    conn.request(method, url, body=body, headers=sent)
                    resp = conn.getresponse()
                    return resp.status, resp.read()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    self._conn = None
                    if attempt == 1 and reused and not isinstance(exc, TimeoutError):
                        continue
                    raise LockerUnavailable(f"cannot reach the team server at "
                                            f"{self.settings.base_url}: {_reason(exc)}") from None
        raise AssertionError("unreachable")

    def get(self, path: str) -> dict[str, Any]:
        """GET ``path`` as JSON."""
        return self._json("GET", path)

    def post(self, path: str, doc: dict[str, Any]) -> dict[str, Any]:
        """POST ``doc`` to ``path``, the answer as JSON."""
        return self._json("POST", path, json.dumps(doc).encode(),
                          {"Content-Type": "application/json"})

    def _json(self, method: str, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> dict[str, Any]:
        status, body = self.exchange(method, path, body, headers)
        if status == 200:
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
            if isinstance(doc, dict):
                return doc
        raise http_failure(status, body, self.settings.base_url, path)

    def lock(self, task_id: str) -> dict[str, Any]:
        return self.get(f"/api/locks/{quote(task_id, safe='')}")

    def locks(self) -> list[dict[str, Any]]:
        locks = self.get("/api/locks").get("locks")
        return locks if isinstance(locks, list) else []

    def events(self, project: str, since: int | None = None, limit: int | None = None,
               epoch: str | None = None) -> dict[str, Any]:
        """``GET /api/events``: ``{"events": [...], "epoch", "last_offset", "truncated"}``."""
        query = {"project": project, "since": since, "limit": limit, "epoch": epoch}
        doc = self.get("/api/events?" + urlencode({k: v for k, v in query.items()
                                                    if v is not None}))
        if not isinstance(doc.get("events"), list):
            raise ConfigError(f"{self.settings.base_url} answered /api/events without a list "
                              "of events; is it an orc team server of this version?")
        return doc

    def presence(self) -> list[dict[str, Any]]:
        """``GET /api/presence``: the users connected now."""
        users = self.get("/api/presence").get("presence")
        return [u for u in users if isinstance(u, dict)] if isinstance(users, list) else []


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def http_failure(status: int, body: bytes, base: str, path: str) -> OrcError:
    """The error for a non-200 answer.  5xx (a broken server, or a proxy in front of a dead
    one) counts as unreachable, so the file lease takes over; 4xx means the server is there and
    refuses this client (bad token, wrong URL), which no fallback should hide."""
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = None
    message = http_error_text(doc)
    if message is None:
        message = body.decode(errors="replace").strip() if body and len(body) < 300 else ""
    if status == 401:
        return ConfigError(f"the team server at {base} refused the token ({message or 'HTTP 401'})"
                           ": get a new one (`orc team invite` or `orc team token`, where "
                           "ORC_TEAM_SECRET is set) and run `orc team login URL`")
    if status >= 500:
        return LockerUnavailable(f"the team server at {base} is unavailable (HTTP {status})")
    if status == 404:
        return ConfigError(f"{base} does not look like an orc team server (HTTP 404 for {path}); "
                           "check team.server_url")
    return ConfigError(f"the team server at {base} refused {path} with HTTP {status}"
                       + (f": {message}" if message else ""))
