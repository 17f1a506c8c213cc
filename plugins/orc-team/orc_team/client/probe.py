"""Is the team server there, and does it accept this token?  One bounded probe, shared by
``orc doctor``, ``orc team login`` and ``orc team status``.

Two requests on one connection: ``GET /api/health`` (unauthenticated: reachable, and how long a
round trip takes) and ``GET /api/presence`` (authenticated: the server checks the token's
signature, expiry and lifetime; 401 means refused).  Messages come from the server's answer and
never contain the token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from orc_git.errors import OrcError

from orc_team.client.http import HttpReader
from orc_team.client.settings import ClientSettings, token_claims

TIMEOUT = 3.0
"""Seconds each request of a probe may take: long enough for a slow link, short enough that a
stopped server makes ``orc doctor`` answer in seconds."""


@dataclass(frozen=True)
class Probe:
    base_url: str
    reachable: bool
    rtt_ms: float | None
    problem: str | None = None
    """Why the server is unreachable or is not an orc team server."""
    token_ok: bool | None = None
    """None: not asked (no token, or the server is unreachable)."""
    token_problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"server_url": self.base_url, "reachable": self.reachable,
                "rtt_ms": self.rtt_ms, "problem": self.problem, "token_ok": self.token_ok,
                "token_problem": self.token_problem}


def probe(base_url: str, token: str | None, timeout: float = TIMEOUT) -> Probe:
    reader = HttpReader(ClientSettings(base_url, token or "", request_timeout=timeout))
    try:
        started = time.perf_counter()
        try:
            reader.get("/api/health")
        except OrcError as exc:
            return Probe(base_url, False, None, exc.message)
        rtt = round((time.perf_counter() - started) * 1000, 2)
        if not token:
            return Probe(base_url, True, rtt)
        try:
            reader.presence()
        except OrcError as exc:
            return Probe(base_url, True, rtt, token_ok=False, token_problem=exc.message)
        return Probe(base_url, True, rtt, token_ok=True)
    finally:
        reader.close()


@dataclass(frozen=True)
class TokenFacts:
    """What a token says about its holder, read without the secret: for display only."""

    user: str | None
    name: str | None
    role: str | None
    expires_at: float | None

    @classmethod
    def read(cls, token: str) -> TokenFacts:
        claims = token_claims(token) or {}

        def text(key: str) -> str | None:
            value = claims.get(key)
            return value if isinstance(value, str) else None

        exp = claims.get("exp")
        expires = float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) \
            else None
        return cls(text("sub"), text("name"), text("role") or ("member" if claims else None),
                   expires)

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= time.time()

    def expiry_text(self) -> str:
        if self.expires_at is None:
            return "no readable expiry"
        try:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.expires_at))
        except (OverflowError, OSError, ValueError):
            return "an unreadable expiry"
        left = self.expires_at - time.time()
        if left <= 0:
            return f"expired {stamp} ({_span(-left)} ago)"
        return f"expires {stamp} (in {_span(left)})"

    def who(self) -> str:
        if self.user is None:
            return "an unreadable token (no user in it)"
        extra = ", ".join(x for x in (self.name if self.name != self.user else None, self.role)
                          if x)
        return f"{self.user} ({extra})" if extra else self.user

    def to_json(self) -> dict[str, Any]:
        return {"user": self.user, "name": self.name, "role": self.role,
                "expires_at": self.expires_at, "expired": self.expired}


def _span(seconds: float) -> str:
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'' if n == 1 else 's'}"
    n = int(seconds)
    return f"{n} second{'' if n == 1 else 's'}"
