"""The aiohttp application: routes, the WebSocket endpoint's life cycle, and the serve loop.

One asyncio process on one port.  Requests are admitted (Origin, token, client id) before the
upgrade; an admitted connection gets a reader (this handler, one message at a time, through the
dispatcher) and a writer task (its bounded queue); the lock and presence sweepers run beside them.
The HTTP JSON views are in :mod:`~orc_team.server.views`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator

from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from orc_team import __version__, protocol
from orc_team.server import views
from orc_team.server.auth import admit_claims, client_instance, origin_allowed
from orc_team.server.config import ServerConfig
from orc_team.server.connection import CLOSE_POLICY, EXPIRED, Connection
from orc_team.server.gate import Gate, admit, describe_limit, raise_open_file_limit
from orc_team.server.logtext import BadRequestFilter, clean, loop_exception_handler
from orc_team.server.pages import Pages
from orc_team.server.state import SERVER, Server
from orc_team.server.store import Store
from orc_team.tokens import Claims

log = logging.getLogger("orc_team.server")
http_log = logging.getLogger("orc_team.http")  # aiohttp's request handler logs here


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
    claims = admit_claims(request)
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
                          middlewares=[admit, views.store_errors])
    app[SERVER] = Server(config, store)
    Pages().add_routes(app)
    app.router.add_get("/api/health", views.health)
    app.router.add_get("/api/ws", ws_endpoint)
    app.router.add_get("/api/locks", views.locks_view)
    app.router.add_get("/api/locks/{task_id}", views.lock_view)
    app.router.add_get("/api/presence", views.presence_view)
    app.router.add_get("/api/events", views.events_view)
    app.router.add_get("/api/resources", views.resources_view)
    app.router.add_get("/api/resources/{resource_id}", views.resource_view)
    app.router.add_put("/api/resources/{resource_id}", views.resource_put)
    app.router.add_post("/api/session", views.session_token)
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
