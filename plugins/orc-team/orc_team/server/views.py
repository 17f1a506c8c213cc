"""The HTTP JSON views: health, locks, presence, events, resources and the sign-in token.

Each one admits its request (401 without a valid token), checks its query, path or body with
the same field rules as a WebSocket message, and answers JSON; the routes are in
:func:`orc_team.server.app.build_app`.
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler

from orc_team import protocol
from orc_team.server.auth import admit_claims, unauthorized
from orc_team.server.fields import Fields
from orc_team.server.locks import lock_json
from orc_team.server.replay import start_after
from orc_team.server.state import SERVER
from orc_team.server.store import ClientInstance, StoreUnavailable
from orc_team.tokens import mint_token

DEFAULT_EVENTS = 100
"""Events ``GET /api/events`` answers without a ``limit``."""
MAX_EVENTS_BODY = 4 * 1024 * 1024
"""Bytes of events one ``GET /api/events`` answers at most: 1,000 events of 64 KiB each would
be a 64 MiB answer; past this it answers fewer than ``limit``."""


async def health(request: web.Request) -> web.Response:
    """``{"status": "ok"}``, or 503 when the store cannot be reached (a Redis store's Redis)."""
    check = getattr(request.app[SERVER].store, "health", None)
    problem = await check() if check is not None else None
    if problem is not None:
        return web.json_response({"status": "unavailable", "store": problem}, status=503)
    return web.json_response({"status": "ok"})


@web.middleware
async def store_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A store that cannot be reached answers 503 UNAVAILABLE (the store logs the outage)."""
    try:
        return await handler(request)
    except StoreUnavailable as exc:
        body = protocol.encode(protocol.http_error(protocol.UNAVAILABLE, str(exc)))
        raise web.HTTPServiceUnavailable(body=body, content_type="application/json",
                                         headers={"Retry-After": "1"}) from None


async def locks_view(request: web.Request) -> web.Response:
    admit_claims(request)
    store = request.app[SERVER].store
    locks = await store.list_locks(time.time())
    return web.json_response({"locks": [lock_json(lock, store.domain) for lock in locks],
                              "lock_domain": store.domain})


async def lock_view(request: web.Request) -> web.Response:
    admit_claims(request)
    task_id = request.match_info["task_id"]
    fields = Fields(protocol.Envelope("lock", None, {"task_id": task_id}))
    try:
        fields.task_id()
    except protocol.ProtocolError as exc:
        raise web.HTTPBadRequest(text=exc.message) from None
    store = request.app[SERVER].store
    lock = await store.get_lock(task_id, time.time())
    return web.json_response({"task_id": task_id, "locked": lock is not None,
                              "lock": lock_json(lock, store.domain) if lock else None,
                              "lock_domain": store.domain,
                              "last_head": await store.last_head(task_id)})


async def presence_view(request: web.Request) -> web.Response:
    admit_claims(request)
    return web.json_response({"presence": request.app[SERVER].presence.snapshot()})


def _bad_request(text: str) -> web.HTTPBadRequest:
    body = protocol.encode(protocol.http_error(protocol.INVALID_MESSAGE, text))
    return web.HTTPBadRequest(body=body, content_type="application/json")


def _query_fields(request: web.Request) -> Fields:
    """The query's parameters as a message's fields: the same checks, naming the parameter."""
    data: dict[str, object] = {}
    for key in ("project", "since", "limit", "epoch"):
        value = request.query.get(key)
        if value is None:
            continue
        if key in ("since", "limit"):
            try:
                data[key] = int(value) if value.isascii() else value
            except ValueError:
                raise _bad_request(f"{key} must be a whole number") from None
        else:
            data[key] = value
    return Fields(protocol.Envelope("events", None, data), "query")


def _within(rows: list[tuple[int, bytes]], keep_newest: bool) -> list[tuple[int, bytes]]:
    """At most MAX_EVENTS_BODY bytes of events (always one): the oldest of them after
    ``since`` (the client pages on from the last), or the newest without it."""
    ordered = reversed(rows) if keep_newest else iter(rows)
    taken: list[tuple[int, bytes]] = []
    size = 0
    for row in ordered:
        size += len(row[1]) + 1
        if taken and size > MAX_EVENTS_BODY:
            break
        taken.append(row)
    return taken[::-1] if keep_newest else taken


async def events_view(request: web.Request) -> web.Response:
    """``GET /api/events?project=P[&since=N][&epoch=E][&limit=L]``: the same replay as
    ``subscribe since`` (the first ``limit`` after ``since``), or without ``since`` the
    latest ``limit`` events; oldest first either way."""
    admit_claims(request)
    fields = _query_fields(request)
    try:
        project = fields.name("project", required=True)
        since, epoch = fields.since(), fields.epoch()
        limit = fields.integer("limit", DEFAULT_EVENTS, 1, protocol.MAX_REPLAY)
    except protocol.ProtocolError as exc:
        raise _bad_request(exc.message) from None
    assert project is not None
    store = request.app[SERVER].store
    stream = await store.stream(project)
    after, truncated = (None, False) if since is None else start_after(stream, since, epoch)
    rows = _within(await store.events(project, after, limit), keep_newest=after is None)
    tail = protocol.encode({"epoch": stream.epoch, "last_offset": stream.last_offset,
                            "truncated": truncated})
    body = b'{"events":[' + b",".join(data for _, data in rows) + b"]," + tail[1:]
    return web.Response(body=body, content_type="application/json")


def _refusal(exc: protocol.ProtocolError) -> web.HTTPException:
    """A resource request's refusal as HTTP: 404, 409 (with ``current``) or 400."""
    body = protocol.encode({"error": {"code": exc.code, "message": exc.message,
                                      **(exc.extra or {})}})
    status = {protocol.NOT_FOUND: web.HTTPNotFound, protocol.CONFLICT: web.HTTPConflict}
    kind = status.get(exc.code, web.HTTPBadRequest)
    return kind(body=body, content_type="application/json")


def _resource_id(request: web.Request) -> str:
    fields = Fields(protocol.Envelope(protocol.RESOURCE_GET, None,
                                      {"resource_id": request.match_info["resource_id"]}),
                    "path")
    try:
        return fields.resource_id()
    except protocol.ProtocolError as exc:
        raise _refusal(exc) from None


async def resources_view(request: web.Request) -> web.Response:
    admit_claims(request)
    found = await request.app[SERVER].resources.list()
    return web.json_response({"resources": [r.to_json() for r in found]})


async def resource_view(request: web.Request) -> web.Response:
    """``GET /api/resources/{id}[?version=N]``: the latest version, or version N."""
    admit_claims(request)
    resource_id = _resource_id(request)
    version: int | None = None
    text = request.query.get("version")
    if text is not None:
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 2**53 - 1):
            raise _bad_request("version must be a whole number from 1")
        version = int(text)
    try:
        found = await request.app[SERVER].resources.get(resource_id, version)
    except protocol.ProtocolError as exc:
        raise _refusal(exc) from None
    return web.Response(body=protocol.encode(found.to_json()), content_type="application/json")


def _if_match(request: web.Request) -> int:
    """``If-Match: N`` (or ``"N"``, an entity tag): the version the write starts from."""
    value = request.headers.get("If-Match")
    if value is None:
        body = protocol.encode(protocol.http_error(
            protocol.INVALID_MESSAGE, "If-Match is required: the version you started from "
            "(0 creates the resource)"))
        raise web.HTTPPreconditionRequired(body=body, content_type="application/json")
    text = value.strip().removeprefix("W/").strip('"')
    if not (text.isascii() and text.isdigit() and int(text) <= 2**53 - 1):
        raise _bad_request("If-Match must be a version number (0 creates the resource)")
    return int(text)


async def resource_put(request: web.Request) -> web.Response:
    """``PUT /api/resources/{id}`` with ``If-Match: N`` and ``{"content", "project_id"?}``."""
    claims = admit_claims(request)
    resource_id = _resource_id(request)
    expected = _if_match(request)
    raw = await request.read()  # bounded by the app's client_max_size (413 past it)
    try:
        doc = protocol.decode(raw)
    except (ValueError, RecursionError):
        raise _bad_request("the body must be a JSON object (UTF-8) such as "
                           '{"content": "...", "project_id": "P"}') from None
    if not isinstance(doc, dict):
        raise _bad_request('the body must be a JSON object such as {"content": "..."}')
    fields = Fields(protocol.Envelope(protocol.RESOURCE_PUT, None, doc), "body")
    server = request.app[SERVER]
    try:
        content, project = fields.content(), fields.name("project_id")
        made = await server.resources.put(resource_id, content, expected,
                                          ClientInstance(claims.user, "http", claims.name,
                                                         claims.email), project)
    except protocol.ProtocolError as exc:
        raise _refusal(exc) from None
    return web.Response(body=protocol.encode(made.to_json()), content_type="application/json",
                        headers={"ETag": f'"{made.version}"'})


SESSION_SECONDS = 8 * 3600
"""How long a sign-in token from ``POST /api/session`` lasts by default: a working day."""
SESSION_MAX = 7 * 86400


async def session_token(request: web.Request) -> web.Response:
    """``POST /api/session`` with ``{"expires_in": S}`` (optional): a short-lived token with
    the caller's claims, ending no later than the caller's own.  What ``orc team dashboard``
    asks for when the user has a token but not the team's secret (only admins hold that)."""
    claims = admit_claims(request)
    raw = await request.read()
    expires_in: object = SESSION_SECONDS
    if raw.strip():
        try:
            doc = protocol.decode(raw)
        except (ValueError, RecursionError):
            doc = None
        if not isinstance(doc, dict):
            raise _bad_request('the body must be a JSON object such as {"expires_in": 3600}')
        expires_in = doc.get("expires_in", SESSION_SECONDS)
    if (not isinstance(expires_in, int) or isinstance(expires_in, bool)
            or not 60 <= expires_in <= SESSION_MAX):
        raise _bad_request(f"expires_in must be a whole number of seconds, 60 to {SESSION_MAX}")
    now = time.time()
    lifetime = min(float(expires_in), claims.expires - now)
    if lifetime < 1:
        raise unauthorized("the token expires within a second; sign in again")
    token = mint_token(request.app[SERVER].config.secret, claims.user, name=claims.name,
                       email=claims.email, role=claims.role, expires_in=lifetime, now=now)
    return web.json_response({"token": token, "expires_at": protocol.iso(now + int(lifetime)),
                              "user": claims.user, "role": claims.role})
