"""One WebSocket client: who it is, what it subscribed to, and its bounded outgoing queue.

Nothing ever awaits a peer's socket except this connection's own writer task: fan-out only
appends to the queue.  A consumer that stops reading fills its own queue and is disconnected; it
can never delay delivery to anybody else.  A reply to the connection's own request skips the
queue and the hop through the writer task while the peer keeps up (nothing queued, nothing left
unsent in the transport), since that hop was a good part of a lock request's cost.  Fan-out
queues one frame made for all its subscribers; each queue is written in one write when the
event loop's turn ends, or by the writer task, at the peer's pace, when the peer is behind.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Any

from aiohttp import WSMsgType, web
from websockets.frames import Frame, Opcode

from orc_team import protocol
from orc_team.server.config import ServerConfig
from orc_team.server.logtext import clean
from orc_team.server.ratelimit import TokenBucket
from orc_team.server.store import ClientInstance
from orc_team.tokens import Claims

log = logging.getLogger("orc_team.server")

CLOSE_POLICY = 1008  # abuse (a flood past the rate limit), or the token expired
EXPIRED = "token expired; reconnect with a new token"


def text_frame(data: bytes) -> bytes:
    """A final, unmasked, uncompressed text frame, serialized by the websockets library: what
    aiohttp's writer would send for this server, whose connections never compress."""
    return Frame(Opcode.TEXT, data).serialize(mask=False)


class Held:
    """A project's live events held back from one connection while a replay of that project
    runs on it (:mod:`orc_team.server.replay`), sent once the replay has caught up.  Bounded:
    past its size it gives up holding (``complete`` False) and the replay reads those events
    from the store instead, where they already are."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.items: list[tuple[int, bytes]] = []
        self.bytes = 0
        self.complete = True

    def hold(self, offset: int | None, data: bytes) -> None:
        if not self.complete or offset is None:
            return
        if len(self.items) >= self.max_items or self.bytes + len(data) > self.max_bytes:
            self.reset()
            self.complete = False
            return
        self.items.append((offset, data))
        self.bytes += len(data)

    def reset(self) -> None:
        self.items.clear()
        self.bytes = 0
        self.complete = True

    def after(self, offset: int) -> list[bytes]:
        """What the replay has not sent, in offset order."""
        return [data for at, data in sorted(self.items, key=lambda item: item[0])
                if at > offset]


class Connection:
    def __init__(self, cid: int, claims: Claims, client: str, remote: str,
                 ws: web.WebSocketResponse, request: web.Request, config: ServerConfig) -> None:
        self.id = cid
        self.claims = claims
        self.holder = ClientInstance(claims.user, client, claims.name, claims.email)
        self.remote = remote
        self.ws = ws
        self._request = request
        self.tasks: set[str] = set()
        self.projects: set[str] = set()
        self.general = TokenBucket(config.rate, config.burst)
        self.control = TokenBucket(config.rate, config.burst)
        self.strikes = TokenBucket(config.rate, min(config.abuse_burst,
                                                    max(1, config.send_queue // 2)))
        self._max_items = config.send_queue
        self._max_bytes = config.send_queue_bytes
        self._queue: collections.deque[tuple[bytes, bytes | None]] = collections.deque()
        self._queued_bytes = 0
        self._flush_due = False
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()  # set while nothing is queued
        self._idle.set()
        self.replays: dict[str, Held] = {}
        self.closing = False
        self.close_reason: str | None = None
        self.close_code: int | None = None
        self._closer: asyncio.Future[None] | None = None

    @property
    def user(self) -> str:
        return self.claims.user

    def __repr__(self) -> str:
        return f"<conn {self.id} {clean(self.user)}/{clean(self.holder.client)}>"

    def send(self, message: dict[str, Any]) -> bool:
        """A reply: written at once when nothing waits before it, else queued.  Order holds:
        nothing is queued, and the transport's buffer is empty, so nothing is on its way
        before it (the writer task hands a message to the transport with no await in between:
        aiohttp writes an uncompressed frame synchronously)."""
        data = protocol.encode(message)
        transport = self._writable()
        if transport is not None and not self._queue:
            transport.write(text_frame(data))  # never blocks: it buffers what the OS won't take
            return True
        return self.send_bytes(data)

    def send_bytes(self, data: bytes, frame: bytes | None = None) -> bool:
        """Queue a message (``frame``: its frame, when a fan-out made it once for all its
        subscribers); False (and the connection is being dropped) when the queue is full.
        What is queued is written once this turn of the event loop ends, in one write: a burst
        of events reaches a subscriber in one wake-up, not one per event."""
        if self.closing:
            return False
        if (len(self._queue) >= self._max_items
                or self._queued_bytes + len(data) > self._max_bytes):
            self.drop("send queue full: the client is not reading", None)
            return False
        self._queue.append((data, frame))
        self._queued_bytes += len(data)
        self._idle.clear()
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)
        return True

    def _writable(self) -> asyncio.Transport | None:
        """The transport, when a write goes straight to the OS (nothing left unsent)."""
        transport = self._request.transport
        if (self.closing or transport is None or transport.is_closing() or self.ws.closed
                or transport.get_write_buffer_size()):
            return None
        return transport

    def _flush(self) -> None:
        """Write everything queued in one write while the peer keeps up; else the writer task
        writes it as the peer reads (aiohttp's writer waits for the socket to drain)."""
        self._flush_due = False
        if not self._queue or self.closing:
            return
        transport = self._writable()
        if transport is None:
            self._wakeup.set()
            return
        frames = [frame or text_frame(data) for data, frame in self._queue]
        self._queue.clear()
        self._queued_bytes = 0
        transport.write(b"".join(frames))
        self._idle.set()

    def has_room(self, size: int) -> bool:
        """Would a message of ``size`` bytes fit in half the queue?  A replay fills only
        half, leaving the rest to replies and to other subscriptions' events."""
        return (len(self._queue) < self._max_items // 2
                and self._queued_bytes + size <= self._max_bytes // 2)

    async def drained(self, timeout: float) -> bool:
        """Wait until the queue is empty (or the connection ends): False after ``timeout``."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def held_room(self) -> Held:
        return Held(max(1, self._max_items // 2), max(1, self._max_bytes // 2))

    async def writer(self) -> None:
        """Drain the queue into the socket, one message at a time, until the connection ends."""
        try:
            while not self.closing:
                while self._queue and not self.closing:
                    data, _ = self._queue.popleft()
                    self._queued_bytes -= len(data)
                    await self.ws.send_frame(data, WSMsgType.TEXT)
                self._wakeup.clear()
                self._idle.set()
                if not self.closing:
                    await self._wakeup.wait()
        except (ConnectionError, RuntimeError) as exc:  # the peer went away mid-send
            log.debug("%r: send failed: %s", self, exc)
            self.drop(f"send failed: {exc}", None)
        except Exception:  # never leave a connection without its writer silently
            log.exception("%r: writer failed", self)
            self.drop("internal error while sending", None)

    def drop(self, reason: str, code: int | None) -> None:
        """End the connection.  With ``code`` (abuse: the peer reads, it just misbehaves) the
        read loop stops at once and closes with that code, draining what the peer still sends
        so the close frame is not lost to a reset.  Without, the socket is aborted now: a stuck
        peer would never read a close frame.  Either way the hub then forgets the connection."""
        if self.closing:
            return
        self.closing = True
        self.close_reason = reason
        self.close_code = code
        self._queue.clear()
        self._queued_bytes = 0
        self._wakeup.set()
        self._idle.set()
        log.warning("%r from %s disconnected: %s", self, self.remote, clean(reason))
        if code is None:
            self._abort()

    def expire(self) -> None:
        """The token's ``exp`` has passed (the connection's timer): nothing more is sent to it,
        and it is closed with 1008 now, not when it next sends something.  The close wakes
        the read loop (aiohttp lets another task close a WebSocket that is being read)."""
        if self.closing:
            return
        self.drop(EXPIRED, CLOSE_POLICY)
        self._closer = asyncio.ensure_future(self._close(CLOSE_POLICY, EXPIRED))

    def _abort(self) -> None:
        transport = self._request.transport
        if transport is not None:
            transport.abort()

    async def close(self, code: int, reason: str) -> None:
        """An orderly close (the read loop's end, server shutdown): pending messages are
        dropped.  A close already under way (the expiry timer's) is waited for, not cut."""
        self.closing = True
        self._wakeup.set()
        self._idle.set()
        if self._closer is None:
            self._closer = asyncio.ensure_future(self._close(code, reason))
        with contextlib.suppress(Exception):
            await asyncio.shield(self._closer)

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), 2.0)
        transport = self._request.transport
        if transport is not None and transport.get_write_buffer_size():
            transport.abort()  # a peer that does not read would keep the socket for ever
        elif transport is not None and not transport.is_closing():
            transport.close()
