"""Admission at the TCP level, before aiohttp reads a byte: what keeps unauthenticated sockets
from starving the server of file descriptors.

- A handshake deadline: a connection whose first request has not reached the application
  ``handshake_timeout`` seconds after it connected (it sent nothing, or half a request) is
  closed.  Later requests on a kept-alive connection get the same time, through aiohttp's own
  ``keepalive_timeout``.
- A cap on the connections open from one peer address: one more is answered 429 and closed
  before aiohttp sees it.
- :func:`raise_open_file_limit` at start: the soft ``RLIMIT_NOFILE`` up to the hard limit.

The gate wraps aiohttp's protocol factory: each connection's protocol is a :class:`Guarded`
in front of aiohttp's request handler, which receives the socket's data directly (the hot path
has no extra call: ``data_received`` is the handler's own bound method).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import resource
from collections.abc import Awaitable, Callable

from aiohttp import web

from orc_team import protocol
from orc_team.server.logtext import Throttle, clean

log = logging.getLogger("orc_team.server")

REFUSED_LINGER = 1.0  # seconds a refused socket may take to read its 429 before it is cut


class Gate:
    """The protocol factory the listening socket uses (see the module's docstring)."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], *, handshake_timeout: float,
                 max_per_peer: int, notices: Throttle) -> None:
        self.factory = factory
        self.handshake_timeout = handshake_timeout
        self.max_per_peer = max_per_peer
        self.notices = notices
        self.peers: collections.Counter[str] = collections.Counter()

    def __call__(self) -> asyncio.Protocol:
        return Guarded(self, self.factory())


class Guarded(asyncio.Protocol):
    """One connection: counted against its peer's cap, on a deadline until admitted."""

    def __init__(self, gate: Gate, inner: asyncio.Protocol) -> None:
        self.gate = gate
        self.inner = inner
        self.peer = ""
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._counted = False
        # The hot path: the transport calls aiohttp's handler without a hop through this class.
        self.data_received = inner.data_received  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        gate = self.gate
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "?")
        if gate.max_per_peer and gate.peers[self.peer] >= gate.max_per_peer:
            self._refuse(transport)
            return
        gate.peers[self.peer] += 1
        self._counted = True
        if gate.handshake_timeout > 0:
            self._timer = asyncio.get_running_loop().call_later(gate.handshake_timeout,
                                                                self._expire)
        self.inner.connection_made(transport)

    def admitted(self) -> None:
        """The first request reached the application: no deadline any more."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        self.gate.notices.warn("handshake", "closed a connection from %s: no complete request "
                               "within %gs (--handshake-timeout)", clean(self.peer),
                               self.gate.handshake_timeout)
        if self.transport is not None:
            self.transport.abort()

    def _refuse(self, transport: asyncio.Transport) -> None:
        """Answer 429 without reading the request, then close.  The request's bytes are left
        unread: closing at once would reset the connection and lose the answer, so the socket
        gets a moment (``REFUSED_LINGER``) to read it; whatever it sends is discarded."""
        limit = self.gate.max_per_peer
        self.gate.notices.warn("per-peer", "refused a connection from %s: %d already open "
                               "from that address (--max-per-peer)", clean(self.peer), limit)
        body = protocol.encode(protocol.http_error(
            protocol.RATE_LIMITED, f"too many connections from this address (at most {limit}); "
            "close some and retry"))
        transport.write(b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                        b"Retry-After: 5\r\nConnection: close\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        self.data_received = _discard  # type: ignore[method-assign]
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(REFUSED_LINGER, transport.abort)

    def eof_received(self) -> bool | None:
        if not self._counted:
            if self.transport is not None:
                self.transport.close()
            return None
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._counted:
            return
        self._counted = False
        peers = self.gate.peers
        peers[self.peer] -= 1
        if peers[self.peer] <= 0:
            del peers[self.peer]
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def _discard(data: bytes) -> None:
    pass


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def admit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The request reached the application: its connection's handshake deadline is off."""
    transport = request.transport
    guard = transport.get_protocol() if transport is not None else None
    if isinstance(guard, Guarded):
        guard.admitted()
    return await handler(request)


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (each connection is a descriptor;
    the soft default, often 1,024, is the first thing a busy server runs out of).  Returns
    ``(before, after)``; ``after`` is ``before`` when the limit could not be raised."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY:
        target = max(soft, min(hard, 1 << 20)) if soft != resource.RLIM_INFINITY else soft
    else:
        target = hard
    if target != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, soft
    return soft, target


def describe_limit(before: int, after: int) -> str:
    if after == before:
        return f"open-file limit {after}"
    return f"open-file limit raised from {before} to {after}"


__all__ = ["Gate", "Guarded", "admit", "describe_limit", "raise_open_file_limit"]
