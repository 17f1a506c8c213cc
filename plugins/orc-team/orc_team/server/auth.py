"""Who may connect: HS256 JWTs, the Origin check for browsers, and the client-instance id.

All three are decided on the HTTP request, before the WebSocket upgrade, so a refused client gets
a plain HTTP status (401, 403, 400) and never a socket.  Reasons are logged; tokens never are.
"""

from __future__ import annotations

import logging
import re
import uuid
from urllib.parse import urlsplit

from aiohttp import web

from orc_team import protocol
from orc_team.protocol import BEARER_PREFIX
from orc_team.server.logtext import clean
from orc_team.server.state import SERVER
from orc_team.tokens import MAX_LIFETIME, AuthError, Claims, verify_token

log = logging.getLogger("orc_team.server")

_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

__all__ = ["admit_claims", "authenticate", "client_instance", "origin_allowed", "token_from",
           "unauthorized"]


def token_from(request: web.Request) -> str | None:
    """``Authorization: Bearer`` first (it stays out of URLs and logs), then a browser's
    ``Sec-WebSocket-Protocol: orc-team, orc-team.bearer.TOKEN``, then ``?token=``."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    for offered in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        offered = offered.strip()
        if offered.startswith(BEARER_PREFIX) and len(offered) > len(BEARER_PREFIX):
            return offered[len(BEARER_PREFIX):]
    return request.query.get("token") or None


def authenticate(request: web.Request, secret: str, max_lifetime: float = MAX_LIFETIME
                 ) -> Claims:
    token = token_from(request)
    if token is None:
        raise AuthError("no token (use ?token= or Authorization: Bearer)")
    return verify_token(token, secret, max_lifetime)


def unauthorized(reason: str) -> web.HTTPUnauthorized:
    body = protocol.encode(protocol.http_error(protocol.UNAUTHORIZED, reason))
    return web.HTTPUnauthorized(body=body, content_type="application/json",
                                headers={"WWW-Authenticate": 'Bearer realm="orc-team"'})


def admit_claims(request: web.Request) -> Claims:
    """The request's claims under this server's secret, or 401 with the reason logged."""
    config = request.app[SERVER].config
    try:
        return authenticate(request, config.secret, config.max_token_lifetime)
    except AuthError as exc:
        log.warning("auth refused: %s %s from %s: %s", clean(request.method),
                    clean(request.path), request.remote, clean(exc))
        raise unauthorized(str(exc)) from None


def origin_allowed(request: web.Request, allowed: frozenset[str]) -> bool:
    """Browsers send Origin; other clients do not and are not cross-site requests.  A browser
    page may connect from the server's own origin or from an origin configured with
    ``--allow-origin`` (a cross-site page would otherwise ride on a user's token)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin in allowed or "*" in allowed:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()


def client_instance(request: web.Request) -> str:
    """The client instance id from ``?client=``; a connection without one is its own instance
    (its locks cannot be extended from another connection)."""
    value = request.query.get("client")
    if value is None:
        return f"conn-{uuid.uuid4().hex[:16]}"
    if not _CLIENT_ID.fullmatch(value):
        raise web.HTTPBadRequest(text="client must be 1-128 letters, digits, '.', '_', ':' or '-'")
    return value
