"""The server's settings in one place, with the defaults the README documents."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from orc_git.errors import UsageError
from orc_git.home import orc_home

from orc_team.protocol import EVENTS_KEPT, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES
from orc_team.tokens import MAX_LIFETIME

SECRET_ENV = "ORC_TEAM_SECRET"
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash


@dataclass
class ServerConfig:
    secret: str
    host: str = "127.0.0.1"
    port: int = 8765
    store: str = ""
    away_after: float = 300.0
    keepalive: float = 20.0
    """WebSocket ping interval; a peer that does not answer within half of it is dropped."""
    allowed_origins: frozenset[str] = field(default_factory=frozenset)
    max_message: int = MAX_MESSAGE_BYTES
    """Largest message the server reads; larger ones are answered MESSAGE_TOO_LARGE."""
    max_frame: int = MAX_FRAME_BYTES
    """Largest message the server receives at all; larger ones close the connection (1009)."""
    rate: float = 100.0
    """Messages per second a connection may sustain, in each of its two buckets (lock traffic
    and the rest), after a burst of ``burst``."""
    burst: float = 200.0
    abuse_burst: float = 500.0
    """Refused messages a connection may accumulate (refilled at ``rate``) before it is closed
    (1008).  Kept below ``send_queue`` so that a flood's own error replies cannot fill the queue
    first: a flooder is told why it is closed."""
    send_queue: int = 1024
    send_queue_bytes: int = 8 * 1024 * 1024
    """Per-connection outgoing backlog; a consumer that lets it fill is disconnected."""
    max_subscriptions: int = 10_000
    sweep_interval: float = 0.2
    """How often expired locks are looked for: a lock.expired is announced within this."""
    handshake_timeout: float = 5.0
    """Seconds a connection has to deliver its request's headers (after connecting, or after
    its previous response); a socket that sends nothing or half a request is closed (0: none)."""
    max_per_peer: int = 256
    """Connections open at once from one peer address, before any authentication (0: no cap).
    One more is answered HTTP 429 and closed."""
    max_per_user: int = 64
    """WebSocket connections open at once with one user's tokens (0: no cap); one more is
    answered HTTP 429 before the upgrade."""
    events_kept: int = EVENTS_KEPT
    """Each project's latest events kept for replay, at least (older ones are dropped in
    steps of a tenth of this)."""
    max_token_lifetime: float = MAX_LIFETIME
    """Longest lifetime (``exp`` minus ``iat``, or minus now) of a token the server accepts."""

    def __post_init__(self) -> None:
        if not self.store:
            self.store = str(orc_home() / "team.sqlite3")


def secret_from_env() -> str:
    """The signing secret, refused (exit 2) when unset: tokens and the server must share it."""
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        raise UsageError(f"{SECRET_ENV} is not set: export the team's shared secret (at least "
                         f"{MIN_SECRET_BYTES} random bytes, e.g. `openssl rand -hex 32`) "
                         "before running `orc team serve` or `orc team token`")
    return secret
