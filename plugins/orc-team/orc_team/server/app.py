"""The aiohttp application: routes, the WebSocket endpoint's life cycle, and the serve loop.

One asyncio process on one port.  Requests are admitted (Origin, token, client id) before the
upgrade; an admitted connection gets a reader (this handler, one message at a time, through the
dispatcher) and a writer task (its bounded queue); the lock and presence sweepers run beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import signal
import time
from collections.abc import AsyncIterator

from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from orc_team import __version__
from orc_team.server import protocol
from orc_team.server.auth import (
    AuthError,
    Claims,
    authenticate,
    client_instance,
    origin_allowed,
)
from orc_team.server.config import ServerConfig
from orc_team.server.connection import CLOSE_POLICY, Connection
from orc_team.server.dispatch import Dispatcher
from orc_team.server.events import EventBus
from orc_team.server.hub import Hub
from orc_team.server.locks import LockService, lock_json
from orc_team.server.presence import Presence
from orc_team.server.store import Store

log = logging.getLogger("orc_team.server")


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


SERVER = web.AppKey("server", Server)


class AccessLogger(AbstractAccessLogger):
    """Method, path and status: never the query string, which may carry ``?token=``."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %s %.3fs", request.remote, request.method, request.path,
                         response.status, time)


def _unauthorized(reason: str) -> web.HTTPUnauthorized:
    body = protocol.encode({"error": {"code": protocol.UNAUTHORIZED, "message": reason}})
    return web.HTTPUnauthorized(body=body, content_type="application/json",
                                headers={"WWW-Authenticate": 'Bearer realm="orc-team"'})


def _admit(request: web.Request) -> Claims:
    config = request.app[SERVER].config
    try:
        return authenticate(request, config.secret)
    except AuthError as exc:
        log.warning("auth refused: %s %s from %s: %s", request.method, request.path,
                    request.remote, exc)
        raise _unauthorized(str(exc)) from None


async def ws_endpoint(request: web.Request) -> web.StreamResponse:
    server = request.app[SERVER]
    config = server.config
    if not origin_allowed(request, config.allowed_origins):
        log.warning("origin refused: %s from %s", request.headers.get("Origin"), request.remote)
        raise web.HTTPForbidden(text="this Origin may not connect; see --allow-origin")
    claims = _admit(request)
    client = client_instance(request)
    ws = web.WebSocketResponse(heartbeat=config.keepalive or None, compress=False,
                               max_msg_size=config.max_frame, timeout=2.0, decode_text=False)
    if not ws.can_prepare(request).ok:
        raise web.HTTPBadRequest(text="this endpoint speaks WebSocket only")
    await ws.prepare(request)
    conn = Connection(server.hub.next_id(), claims, client, request.remote or "?", ws, request,
                      config)
    server.hub.add(conn)
    writer = asyncio.create_task(conn.writer())
    log.info("connect %r from %s (role %s)", conn, conn.remote, claims.role)
    server.presence.connect(conn)
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                if time.time() >= claims.expires:  # closed, not refused message by message
                    conn.drop("token expired; reconnect with a new token", CLOSE_POLICY)
                else:
                    await server.dispatcher.handle(conn, msg.data,
                                                   msg.type == WSMsgType.BINARY)
            elif msg.type == WSMsgType.ERROR:
                conn.close_reason = conn.close_reason or f"{ws.exception()}"
                break
            if conn.closing:
                break
    finally:
        conn.closing = True
        writer.cancel()
        server.hub.remove(conn)  # first: no more fan-out to it, and presence is told at once
        server.presence.disconnect(conn)
        if conn.close_code is not None:
            await conn.close(conn.close_code, conn.close_reason or "")
        log.info("disconnect %r (%s)", conn, conn.close_reason or f"close code {ws.close_code}")
    return ws


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def locks_view(request: web.Request) -> web.Response:
    _admit(request)
    store = request.app[SERVER].store
    locks = await store.list_locks(time.time())
    return web.json_response({"locks": [lock_json(lock, store.domain) for lock in locks],
                              "lock_domain": store.domain})


async def lock_view(request: web.Request) -> web.Response:
    _admit(request)
    task_id = request.match_info["task_id"]
    fields = protocol.Fields(protocol.Envelope("lock", None, {"task_id": task_id}))
    try:
        fields.task_id()
    except protocol.ProtocolError as exc:
        raise web.HTTPBadRequest(text=exc.message) from None
    store = request.app[SERVER].store
    lock = await store.get_lock(task_id, time.time())
    return web.json_response({"task_id": task_id, "locked": lock is not None,
                              "lock": lock_json(lock, store.domain) if lock else None,
                              "lock_domain": store.domain})


async def presence_view(request: web.Request) -> web.Response:
    _admit(request)
    return web.json_response({"presence": request.app[SERVER].presence.snapshot()})


async def index(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>orc-team</title></head>
<body><h1>orc-team {html.escape(__version__)}</h1>
<p>{len(server.hub.connections)} connection(s), {len(server.presence.users)} user(s) online.</p>
<p>WebSocket: <code>/api/ws?token=&lt;jwt&gt;&amp;client=&lt;id&gt;</code>.
JSON (same token): <a href="/api/locks">/api/locks</a>, <a href="/api/presence">/api/presence</a>,
<a href="/api/health">/api/health</a>. The live dashboard comes later.</p>
</body></html>
"""
    return web.Response(text=body, content_type="text/html")


async def _background(app: web.Application) -> AsyncIterator[None]:
    server = app[SERVER]
    tasks = [asyncio.create_task(server.locks.run_sweeper(server.config.sweep_interval)),
             asyncio.create_task(server.presence.run_sweeper())]
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
    app = web.Application(client_max_size=64 * 1024)
    app[SERVER] = Server(config, store)
    app.router.add_get("/", index)
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/ws", ws_endpoint)
    app.router.add_get("/api/locks", locks_view)
    app.router.add_get("/api/locks/{task_id}", lock_view)
    app.router.add_get("/api/presence", presence_view)
    app.cleanup_ctx.append(_background)
    app.on_shutdown.append(_close_connections)
    return app


async def serve(config: ServerConfig, store: Store) -> None:
    """Listen until SIGINT or SIGTERM, then close every connection and the store cleanly."""
    app = build_app(config, store)
    runner = web.AppRunner(app, access_log_class=AccessLogger, handle_signals=False,
                           access_log=logging.getLogger("orc_team.access"), shutdown_timeout=5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        host, port = runner.addresses[0][:2] if runner.addresses else (config.host, config.port)
        log.info("orc-team %s listening on http://%s:%d (store %s, away after %gs)",
                 __version__, host, port, config.store, config.away_after)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()


def run(config: ServerConfig, store: Store) -> None:
    """On the stdlib event loop, polling briefly after activity (:mod:`busypoll`).  uvloop took
    about a sixth off a lock request's round trip but tripled the fan-out's p99
    publish-to-receive latency at 1,000 subscribers (44 ms to about 150 ms), so it is not used."""
    from orc_team.server.busypoll import event_loop

    with asyncio.Runner(loop_factory=lambda: event_loop(config.busy_poll)) as runner:
        runner.run(serve(config, store))


__all__ = ["SERVER", "Server", "build_app", "run", "serve"]
