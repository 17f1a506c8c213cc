"""The aiohttp application: routes, the WebSocket endpoint's life cycle, and the serve loop.

One asyncio process on one port.  Requests are admitted (Origin, token, client id) before the
upgrade; an admitted connection gets a reader (this handler, one message at a time, through the
dispatcher) and a writer task (its bounded queue); the lock and presence sweepers run beside them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator

from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from orc_team import __version__, protocol
from orc_team.server.auth import authenticate, client_instance, origin_allowed
from orc_team.server.config import ServerConfig
from orc_team.server.connection import CLOSE_POLICY, EXPIRED, Connection
from orc_team.server.dispatch import Dispatcher
from orc_team.server.events import EventBus
from orc_team.server.fields import Fields
from orc_team.server.gate import Gate, admit, describe_limit, raise_open_file_limit
from orc_team.server.hub import Hub
from orc_team.server.locks import LockService, lock_json
from orc_team.server.logtext import BadRequestFilter, Throttle, clean, loop_exception_handler
from orc_team.server.pages import Pages
from orc_team.server.presence import Presence
from orc_team.server.replay import start_after
from orc_team.server.store import ClientInstance, Store, StoreUnavailable
from orc_team.tokens import AuthError, Claims, mint_token

log = logging.getLogger("orc_team.server")
DEFAULT_EVENTS = 100
"""Events ``GET /api/events`` answers without a ``limit``."""
MAX_EVENTS_BODY = 4 * 1024 * 1024
"""Bytes of events one ``GET /api/events`` answers at most: 1,000 events of 64 KiB each would
be a 64 MiB answer; past this it answers fewer than ``limit``."""
http_log = logging.getLogger("orc_team.http")  # aiohttp's request handler logs here


class Server:
    """The objects one server process shares between its connections."""

    def __init__(self, config: ServerConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self.hub = Hub(config.max_subscriptions)
        self.events = EventBus(self.hub, store)
        self.locks = LockService(store, self.events, self.hub)
        self.presence = Presence(self.hub, config.away_after)
        self.dispatcher = Dispatcher(config, store, self.hub, self.events, self.locks,
                                     self.presence)
        self.resources = self.dispatcher.resources
        self.notices = Throttle(log)
        self.per_user: collections.Counter[str] = collections.Counter()


SERVER = web.AppKey("server", Server)


class AccessLogger(AbstractAccessLogger):
    """Method, path and status: never the query string, which may carry ``?token=``.  A
    request aiohttp could not parse is reported by :class:`BadRequestFilter` instead."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if request.method == "UNKNOWN":  # aiohttp's stand-in for an unparsable request
            return
        self.logger.info("%s %s %s %s %.3fs", request.remote, clean(request.method),
                         clean(request.path), response.status, time)


GC_OLDEST_THRESHOLD = 100
"""Collections of the middle generation before one of the oldest (Python's default: 10)."""


def _unauthorized(reason: str) -> web.HTTPUnauthorized:
    body = protocol.encode(protocol.http_error(protocol.UNAUTHORIZED, reason))
    return web.HTTPUnauthorized(body=body, content_type="application/json",
                                headers={"WWW-Authenticate": 'Bearer realm="orc-team"'})


def _admit(request: web.Request) -> Claims:
    config = request.app[SERVER].config
    try:
        return authenticate(request, config.secret, config.max_token_lifetime)
    except AuthError as exc:
        log.warning("auth refused: %s %s from %s: %s", clean(request.method),
                    clean(request.path), request.remote, clean(exc))
        raise _unauthorized(str(exc)) from None


def _too_many(message: str) -> web.HTTPTooManyRequests:
    body = protocol.encode(protocol.http_error(protocol.RATE_LIMITED, message))
    return web.HTTPTooManyRequests(body=body, content_type="application/json",
                                   headers={"Retry-After": "5"})


async def ws_endpoint(request: web.Request) -> web.StreamResponse:
    server = request.app[SERVER]
    config = server.config
    if not origin_allowed(request, config.allowed_origins):
        log.warning("origin refused: %s from %s", clean(request.headers.get("Origin")),
                    request.remote)
        raise web.HTTPForbidden(text="this Origin may not connect; see --allow-origin")
    claims = _admit(request)
    client = client_instance(request)
    if config.max_per_user and server.per_user[claims.user] >= config.max_per_user:
        server.notices.warn("per-user", "refused a connection for %s from %s: %d already "
                            "open (--max-per-user)", clean(claims.user), request.remote,
                            config.max_per_user)
        raise _too_many(f"user {claims.user} already has {config.max_per_user} connections "
                        "open (the server's --max-per-user); close some and retry")
    server.per_user[claims.user] += 1  # taken before the upgrade: a burst cannot overshoot
    try:
        return await _serve_ws(request, server, claims, client)
    finally:
        server.per_user[claims.user] -= 1
        if server.per_user[claims.user] <= 0:
            del server.per_user[claims.user]


async def _serve_ws(request: web.Request, server: Server, claims: Claims,
                    client: str) -> web.StreamResponse:
    config = server.config
    ws = web.WebSocketResponse(heartbeat=config.keepalive or None, compress=False,
                               max_msg_size=config.max_frame, timeout=2.0, decode_text=False,
                               protocols=(protocol.SUBPROTOCOL,))
    if not ws.can_prepare(request).ok:
        raise web.HTTPBadRequest(text="this endpoint speaks WebSocket only")
    await ws.prepare(request)
    conn = Connection(server.hub.next_id(), claims, client, request.remote or "?", ws, request,
                      config)
    server.hub.add(conn)
    writer = asyncio.create_task(conn.writer())
    loop = asyncio.get_running_loop()
    # Closed when its token expires, whether or not it sends anything: one timer per connection.
    expiry = loop.call_later(max(claims.expires - time.time(), 0.0), conn.expire)
    log.info("connect %r from %s (role %s)", conn, conn.remote, claims.role)
    server.presence.connect(conn)
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                if time.time() >= claims.expires:  # the timer is due: never answer past exp
                    conn.drop(EXPIRED, CLOSE_POLICY)
                else:
                    await server.dispatcher.handle(conn, msg.data,
                                                   msg.type == WSMsgType.BINARY)
            elif msg.type == WSMsgType.ERROR:
                conn.close_reason = conn.close_reason or f"{ws.exception()}"
                break
            if conn.closing:
                break
    finally:
        expiry.cancel()
        conn.closing = True
        writer.cancel()
        server.hub.remove(conn)  # first: no more fan-out to it, and presence is told at once
        server.presence.disconnect(conn)
        if conn.close_code is not None:
            await conn.close(conn.close_code, conn.close_reason or "")
        log.info("disconnect %r (%s)", conn,
                 clean(conn.close_reason or f"close code {ws.close_code}"))
    return ws


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
    _admit(request)
    store = request.app[SERVER].store
    locks = await store.list_locks(time.time())
    return web.json_response({"locks": [lock_json(lock, store.domain) for lock in locks],
                              "lock_domain": store.domain})


async def lock_view(request: web.Request) -> web.Response:
    _admit(request)
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
    _admit(request)
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
    _admit(request)
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
    _admit(request)
    found = await request.app[SERVER].resources.list()
    return web.json_response({"resources": [r.to_json() for r in found]})


async def resource_view(request: web.Request) -> web.Response:
    """``GET /api/resources/{id}[?version=N]``: the latest version, or version N."""
    _admit(request)
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
    claims = _admit(request)
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
    claims = _admit(request)
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
        raise _unauthorized("the token expires within a second; sign in again")
    token = mint_token(request.app[SERVER].config.secret, claims.user, name=claims.name,
                       email=claims.email, role=claims.role, expires_in=lifetime, now=now)
    return web.json_response({"token": token, "expires_at": protocol.iso(now + int(lifetime)),
                              "user": claims.user, "role": claims.role})


async def _background(app: web.Application) -> AsyncIterator[None]:
    server = app[SERVER]
    tasks = [asyncio.create_task(server.locks.run_sweeper(server.config.sweep_interval)),
             asyncio.create_task(server.presence.run_sweeper())]
    share = getattr(server.store, "share", None)  # a store shared by several processes
    if share is not None:
        tasks.append(asyncio.create_task(share(server)))
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await server.store.close()


async def _close_connections(app: web.Application) -> None:
    conns = list(app[SERVER].hub.connections.values())
    await asyncio.gather(*(c.close(1001, "server shutting down") for c in conns),
                         return_exceptions=True)


def build_app(config: ServerConfig, store: Store) -> web.Application:
    app = web.Application(client_max_size=protocol.MAX_RESOURCE_MESSAGE_BYTES,
                          middlewares=[admit, store_errors])
    app[SERVER] = Server(config, store)
    Pages().add_routes(app)
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/ws", ws_endpoint)
    app.router.add_get("/api/locks", locks_view)
    app.router.add_get("/api/locks/{task_id}", lock_view)
    app.router.add_get("/api/presence", presence_view)
    app.router.add_get("/api/events", events_view)
    app.router.add_get("/api/resources", resources_view)
    app.router.add_get("/api/resources/{resource_id}", resource_view)
    app.router.add_put("/api/resources/{resource_id}", resource_put)
    app.router.add_post("/api/session", session_token)
    app.cleanup_ctx.append(_background)
    app.on_shutdown.append(_close_connections)
    return app


async def serve(config: ServerConfig, store: Store) -> None:
    """Listen until SIGINT or SIGTERM, then close every connection and the store cleanly.

    The listening socket's protocol factory is a :class:`~orc_team.server.gate.Gate` in front
    of aiohttp's: it caps connections per peer and closes those that never deliver a request.
    """
    before, after = raise_open_file_limit()
    app = build_app(config, store)
    notices = app[SERVER].notices
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(loop_exception_handler(notices))
    if not any(isinstance(f, BadRequestFilter) for f in http_log.filters):
        http_log.addFilter(BadRequestFilter(notices))
    options: dict[str, float] = {}
    if config.handshake_timeout > 0:  # a kept-alive connection's next request: same deadline
        options["keepalive_timeout"] = config.handshake_timeout
    runner = web.AppRunner(app, access_log_class=AccessLogger, handle_signals=False,
                           access_log=logging.getLogger("orc_team.access"), shutdown_timeout=5,
                           logger=http_log, **options)
    await runner.setup()
    listener: asyncio.Server | None = None
    try:
        assert runner.server is not None
        gate = Gate(runner.server, handshake_timeout=config.handshake_timeout,
                    max_per_peer=config.max_per_peer, notices=notices)
        listener = await loop.create_server(gate, config.host, config.port, backlog=128)
        host, port = listener.sockets[0].getsockname()[:2]
        log.info("orc-team %s listening on http://%s:%d (store %s, away after %gs, %s)",
                 __version__, host, port, _describe(store, config), config.away_after,
                 describe_limit(before, after))
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        if listener is not None:
            listener.close()
        with contextlib.suppress(Exception):
            await runner.cleanup()


def _describe(store: Store, config: ServerConfig) -> str:
    """The store for the log: a Redis store says where without its password."""
    describe = getattr(store, "describe", None)
    return str(describe()) if describe is not None else config.store


def run(config: ServerConfig, store: Store) -> None:
    """On the stdlib event loop, which sleeps in ``epoll`` whenever it has nothing to do: busy
    polling after activity only paid off for requests sent back to back in one batch, not for
    leases taken one at a time, and cost CPU (``docs/benchmarks.md``).  uvloop took about a
    sixth off a lock request's round trip but tripled the fan-out's p99 publish-to-receive
    latency at 1,000 subscribers, so it is not used.  The oldest GC generation is collected
    a tenth as often as Python's default: with 1,000 connections each full collection
    stalled every event for 130-330 ms (``bench/fanout_bench.py``); young cycles are still
    collected as often as before."""
    first, second, _ = gc.get_threshold()
    gc.set_threshold(first, second, GC_OLDEST_THRESHOLD)
    asyncio.run(serve(config, store))


__all__ = ["SERVER", "Server", "build_app", "run", "serve"]
