"""One WebSocket connection over a plain blocking socket, framed by the websockets library's
Sans-I/O protocol (handshake, masking, ping/pong, close and size limits are all the library's).

It has no thread of its own, which is its reason to exist: the thread that waits for a reply reads
the socket itself, so a round trip costs no hand-over between threads (the library's sync client
reads in a thread of its own and queues what it reads: a thread switch per message, and ours
would add another).  Who may read when is the client's business (:mod:`orc_team.client.wsclient`:
one reader at a time); any thread may send.  Readers and senders share the protocol object (a
received ping is answered, a received close echoed), so every call into it and every write to
the socket happen under one mutex.  POSIX only, like orc-git's file locks (``select.poll``).

Imported only when a connection is opened: it imports websockets, and building a locker (every
``orc lock`` command does) must stay cheap.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable

from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidState
from websockets.frames import BINARY, CONT, TEXT, Frame
from websockets.http11 import Response
from websockets.protocol import Event, State

BUFSIZE = 64 * 1024
"""Under the allocator's mmap threshold: recv allocates a buffer this big for every call."""

class Link:
    def __init__(self, sock: socket.socket, protocol: ClientProtocol, keepalive: float) -> None:
        self.sock = sock
        self.protocol = protocol
        self.keepalive = keepalive
        self.ended: ConnectionClosed | None = None
        """Why the connection has ended (with the close frame received, if any)."""
        self.lost = False
        """Set by the client once it has dealt with the end of this connection."""
        self.last_received = time.monotonic()
        self._ping_sent: float | None = None
        self._mutex = threading.Lock()
        self._fragments: list[bytes] = []
        self._backlog: list[bytes] = []
        self._tls_pending: Callable[[], int] | None = getattr(sock, "pending", None)
        self._wake, self._waker = socket.socketpair()
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)
        self._poll_or_wake = select.poll()
        self._poll_or_wake.register(sock, select.POLLIN)
        self._poll_or_wake.register(self._wake, select.POLLIN)

    # -- opening ---------------------------------------------------------------------------

    def handshake(self, headers: dict[str, str], deadline: float) -> None:
        """Send the upgrade request and read its answer by ``deadline`` (TimeoutError).  Raises
        the protocol's InvalidHandshake (InvalidStatus for a non-101 answer)."""
        request = self.protocol.connect()
        request.headers.update(headers)
        with self._mutex:
            self.protocol.send_request(request)
            self._flush()
        response: Response | None = None
        while response is None and self.protocol.handshake_exc is None:
            left = deadline - time.monotonic()
            if left <= 0 or not self._poll.poll(left * 1000):
                raise TimeoutError("timed out")
            for event in self._feed(self.sock.recv(BUFSIZE)):
                if isinstance(event, Response):
                    response = event
                else:
                    self._backlog += self._assemble([event])
        if self.protocol.handshake_exc is not None:
            raise self.protocol.handshake_exc
        assert self.protocol.state is State.OPEN

    # -- sending ---------------------------------------------------------------------------

    def send_text(self, data: bytes) -> None:
        """Send UTF-8 ``data`` as a text frame.  Raises OSError (ConnectionError once the
        connection is closing)."""
        with self._mutex:
            try:
                self.protocol.send_text(data)
            except InvalidState as exc:
                raise ConnectionError(str(exc)) from None
            self._flush()

    def send_close(self) -> None:
        """Start the closing handshake (code 1000); the echo ends the connection."""
        with self._mutex:
            try:
                self.protocol.send_close(1000)
            except InvalidState:
                return
            self._flush()

    def keepalive_due(self, now: float) -> float | None:
        """Seconds until this needs looking at again, pinging when the peer has said nothing for
        ``keepalive`` s; None once a ping has gone unanswered (anything received counts) for
        another ``keepalive`` s: the peer is gone."""
        sent = self._ping_sent
        if sent is not None and self.last_received < sent:
            left = sent + self.keepalive - now
            return left if left > 0 else None
        left = self.last_received + self.keepalive - now
        if left > 0:
            return left
        self._ping_sent = now
        with self._mutex:
            try:
                self.protocol.send_ping(int(now * 1000).to_bytes(8, "big"))
                self._flush()
            except (InvalidState, OSError):
                return None
        return self.keepalive

    def _flush(self) -> None:
        try:
            for data in self.protocol.data_to_send():
                if data:
                    self.sock.sendall(data)
                else:  # the protocol's end of stream: half-close
                    self.sock.shutdown(socket.SHUT_WR)
        except OSError:  # e.g. the send timeout: part of a frame may be out, so end it all
            self.abort()
            raise

    # -- reading (one reader at a time) ----------------------------------------------------

    def read(self, timeout: float) -> list[bytes]:
        """The complete messages that arrive within ``timeout`` s (none on a timeout or once
        the connection has ended, see :attr:`ended`)."""
        here = self._here()
        if here is not None:
            return here
        if self.ended is not None:
            return []
        if not self._poll.poll(max(timeout, 0.0) * 1000):
            return []
        return self._receive()

    def read_or_wake(self, timeout: float) -> list[bytes] | None:
        """As :meth:`read`, but None as soon as :meth:`wake` is called (by a thread that wants
        to read itself)."""
        here = self._here()
        if here is not None:
            return here
        if self.ended is not None:
            return []
        ready = self._poll_or_wake.poll(max(timeout, 0.0) * 1000)
        if any(fd == self._wake.fileno() for fd, _ in ready):
            self._wake.recv(64)
            return None
        return self._receive() if ready else []

    def _here(self) -> list[bytes] | None:
        """What can be had without waiting and without poll seeing it: frames read with the
        handshake, or TLS data already decrypted."""
        if self._backlog:
            messages, self._backlog = self._backlog, []
            return messages
        if self._tls_pending is not None and self._tls_pending() and self.ended is None:
            return self._receive()
        return None

    def wake(self) -> None:
        """Make the current :meth:`read_or_wake` (or the next one) return None at once."""
        # OSError: closed, or wake-ups already waiting fill the buffer; either way, fine
        with contextlib.suppress(OSError):
            self._waker.send(b"w")

    def _receive(self, data: bytes | None = None) -> list[bytes]:
        if data is None:
            try:
                data = self.sock.recv(BUFSIZE)
            except OSError:
                data = b""
        messages = self._assemble(self._feed(data))
        if self.ended is not None:
            with self._mutex:
                self.sock.close()
        return messages

    def _feed(self, data: bytes) -> list[Event]:
        self.last_received = time.monotonic()
        with self._mutex:
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            p = self.protocol
            events = p.events_received()
            if p.state is not State.CLOSED and (p.close_rcvd is not None
                                                 or p.parser_exc is not None):
                # The peer closed, or broke the protocol: nothing more is coming that counts.
                p.receive_eof()
            with contextlib.suppress(OSError):  # the reader finds out
                self._flush()
            if p.state is State.CLOSED:
                self.ended = p.close_exc
        return events

    def _assemble(self, events: list[Event]) -> list[bytes]:
        messages = []
        for event in events:
            if isinstance(event, Frame) and event.opcode in (TEXT, BINARY, CONT):
                if event.fin and not self._fragments:
                    messages.append(bytes(event.data))
                    continue
                self._fragments.append(bytes(event.data))
                if event.fin:
                    messages.append(b"".join(self._fragments))
                    self._fragments.clear()
        return messages

    # -- ending ----------------------------------------------------------------------------

    def abort(self) -> None:
        """End the connection under whoever is reading it (they see its end at once)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def dispose(self) -> None:
        """Free what is left once nobody reads or wakes this link any more."""
        with self._mutex:
            self.sock.close()
        self._wake.close()
        self._waker.close()
