"""Where the team server is and how to talk to it, read from orc-git's layered config.

``team.server_url`` (``ORC_TEAM_URL``) is the server's base, ``ws://host:port`` (DESIGN: clients
connect to ``<base>/api/ws``), or several comma-separated (instances on one Redis store: the
client connects to the next when one fails); ``team.token`` (``ORC_TEAM_TOKEN``) the JWT from
``orc team token``;
``team.project`` the project id sent with every lock; ``team.timeout`` the seconds a request may
take before the server counts as unreachable.  Both required values are checked here, so a
missing one is a clear ConfigError (exit 3), never a fallback that would hide it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from orc_git.errors import ConfigError

DEFAULT_TIMEOUT = 0.75
"""A lock round trip on loopback takes about a millisecond; 0.75 s leaves room for a loaded
server while keeping "fall back within 1 s" against a server that accepts but never answers."""

OPEN_TIMEOUT = 0.5
"""TCP + WebSocket handshake.  A refused connect (server down) fails at once; this bounds the
cost of a server that is stopped (SIGSTOP) or a host that drops packets."""

_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


@dataclass(frozen=True)
class ClientSettings:
    base_url: str
    """``ws://host:port`` or ``wss://host[:port]/prefix``, without a trailing slash."""
    token: str
    project: str | None = None
    request_timeout: float = DEFAULT_TIMEOUT
    open_timeout: float = OPEN_TIMEOUT
    keepalive: float = 15.0
    """Library ping interval (and pong timeout): a silently dead connection is noticed and
    replaced (re-asserting held locks) without waiting for the next lock request."""
    backoff_initial: float = 0.1
    backoff_cap: float = 5.0
    servers: tuple[str, ...] = ()
    """Every instance's base URL when several are configured (``base_url`` is the one in use):
    a connection that cannot be opened to one is tried on the next."""

    @property
    def urls(self) -> tuple[str, ...]:
        return self.servers or (self.base_url,)

    @property
    def ws_endpoint(self) -> str:
        return f"{self.base_url}/api/ws"

    @property
    def http_base(self) -> str:
        scheme, rest = self.base_url.split(":", 1)
        return ("https" if scheme == "wss" else "http") + ":" + rest

    @property
    def user(self) -> str | None:
        return token_subject(self.token)

    @property
    def role(self) -> str | None:
        return token_role(self.token)


def normalize_url(url: str) -> str:
    """The base URL as ``ws[s]://host[:port][/prefix]``; ``http[s]://`` and a trailing
    ``/api/ws`` are accepted too, since people paste what their browser or proxy shows."""
    parts = urlsplit(url.strip())
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise ConfigError(f"team.server_url must look like ws://HOST:PORT (got {url!r})")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ConfigError(f"team.server_url has a bad port: {url!r}") from None
    path = parts.path.rstrip("/")
    path = path.removesuffix("/api/ws")
    return urlunsplit((scheme, parts.netloc, path, "", "")).rstrip("/")


def token_claims(token: str) -> dict[str, Any]:
    """A JWT's claims, read without checking the signature: the server does that; the client
    only reads who it is (``sub``) and what it may do (``role``), to tell its own leases from
    others' and not to offer what the server would refuse.  ``{}`` for an unreadable token."""
    try:
        payload = token.split(".")[1]
        claims: Any = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def token_subject(token: str) -> str | None:
    """The user id (``sub``) a JWT names."""
    sub = token_claims(token).get("sub")
    return sub if isinstance(sub, str) and sub else None


def token_role(token: str) -> str | None:
    """The role (``member`` | ``admin``) a JWT claims, or None when it names none."""
    role = token_claims(token).get("role")
    return role if isinstance(role, str) and role else None


def _number(config: Any, key: str, default: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 60:
        raise ConfigError(f"{key} must be a number of seconds from 0 to 60 (got {value!r} "
                          f"from {config.sources.get(key, 'defaults')})")
    return float(value)


def settings_from_config(config: Any) -> ClientSettings:
    """Read ``team.*`` from an :class:`orc_git.config.Config`."""
    url = config.get("team.server_url")
    if not url or not isinstance(url, str):
        raise ConfigError("team mode needs the team server's URL: set team.server_url "
                          "(`orc init --mode team --server-url ws://HOST:8765`) or ORC_TEAM_URL")
    token = config.get("team.token")
    if not token or not isinstance(token, str):
        raise ConfigError("team mode needs a token: `orc team login URL` stores one (whoever "
                          "holds ORC_TEAM_SECRET makes it with `orc team invite --user ID`), "
                          "or set ORC_TEAM_TOKEN")
    project = config.get("team.project")
    urls = tuple(normalize_url(part) for part in url.split(",") if part.strip())
    if not urls:
        raise ConfigError(f"team.server_url must look like ws://HOST:PORT (got {url!r})")
    return ClientSettings(urls[0], token.strip(),
                          project=str(project) if project not in (None, "") else None,
                          request_timeout=_number(config, "team.timeout", DEFAULT_TIMEOUT),
                          servers=urls if len(urls) > 1 else ())
