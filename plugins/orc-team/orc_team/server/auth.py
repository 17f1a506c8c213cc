"""Who may connect: HS256 JWTs, the Origin check for browsers, and the client-instance id.

All three are decided on the HTTP request, before the WebSocket upgrade, so a refused client gets
a plain HTTP status (401, 403, 400) and never a socket.  Reasons are logged; tokens never are.
"""

from __future__ import annotations

import re
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
from aiohttp import web

ALGORITHM = "HS256"
ROLES = ("member", "admin")
_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

# The CLI warns once about a short secret; PyJWT would otherwise warn on every token checked.
warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)


class AuthError(Exception):
    """Why a token was refused, in words safe to log and to send back."""


@dataclass(frozen=True)
class Claims:
    user: str
    name: str
    email: str | None
    role: str
    expires: float

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def mint_token(secret: str, user: str, *, name: str | None = None, email: str | None = None,
               role: str = "member", expires_in: float = 30 * 86400,
               now: float | None = None) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": user, "name": name or user, "role": role, "iat": issued,
                              "exp": issued + int(expires_in)}
    if email:
        claims["email"] = email
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(token: str, secret: str) -> Claims:
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM],
                            options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.InvalidSignatureError:
        raise AuthError("bad token signature") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid token ({type(exc).__name__})") from None
    user, role = claims.get("sub"), claims.get("role", "member")
    if not isinstance(user, str) or not user or len(user) > 100:
        raise AuthError("invalid token (sub must be a user id)")
    if role not in ROLES:
        raise AuthError("invalid token (role must be member or admin)")
    name, email = claims.get("name"), claims.get("email")
    return Claims(user, name if isinstance(name, str) and name else user,
                  email if isinstance(email, str) else None, role, float(claims["exp"]))


def token_from(request: web.Request) -> str | None:
    """``Authorization: Bearer`` first (it stays out of URLs and logs), then ``?token=``."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("token") or None


def authenticate(request: web.Request, secret: str) -> Claims:
    token = token_from(request)
    if token is None:
        raise AuthError("no token (use ?token= or Authorization: Bearer)")
    return verify_token(token, secret)


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
