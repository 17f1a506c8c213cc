"""A WebSocket client for sync code: requests with replies, and a connection that heals itself.

Any thread (the CLI, the heartbeat thread, the reconnect thread) can ``request()`` and wait with a
timeout.  A round trip costs no hand-over between threads: the requesting thread sends, then
reads the socket itself until its reply comes (:class:`~orc_team.client.link.Link`), handing
everything else it reads on: other threads' replies to them, events and presence to listeners,
replies that came too late to ``on_late``.  One thread reads at a time (the *read turn*); the
others wait on a condition for their reply or for the turn.  While no request is waiting, the
connection's own thread (the *pump*) holds the turn, so pushes are handled and the server's pings
answered when the client is idle, and it sends our keepalive pings; a requester wakes it to take
the turn over.  The pump lets a burst of requests finish (``QUIET``) before it reads again, so a
loop of requests does not wake it for each one.

Failing fast is the point: the file lease is the fallback, so a dead server must cost well under
a second, never a long timeout.  A refused TCP connect fails at once, the handshake is bounded by
``open_timeout`` and a request by ``request_timeout``; all of these raise LockerUnavailable.  A
request that times out leaves its connection open, since a slow server (or one resumed after
SIGSTOP) may still answer; the keepalive ping drops a connection whose peer is really gone.

Connections are opened on demand.  When one is lost while there is something to restore (locks
held, subscriptions), a reconnect thread retries with capped exponential backoff and jitter, and
every new connection runs the ``on_connect`` callbacks: re-subscribe, and the locker's
re-assertion of its held locks.  Replies that arrive after their request timed out are not
dropped silently: they go to ``on_late`` (a lock granted after we gave up must be given back).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orc_git.errors import InvalidInput, LockerUnavailable, OrcError

from orc_team import protocol
from orc_team.client.backoff import Backoff
from orc_team.client.dial import closed_error, open_link
from orc_team.client.replies import Message, Pending, Replies, ServerError
from orc_team.client.settings import ClientSettings

if TYPE_CHECKING:
    from orc_team.client.link import Link

log = logging.getLogger("orc_team.client")
log.addHandler(logging.NullHandler())  # library chatter must not reach stderr via lastResort

Callback = Callable[[], None]
Listener = Callable[[Message], None]

QUIET = 0.02
"""Seconds without a request before the pump reads again: short against a push's delivery,
long against the gap between two requests of a loop."""
CLOSE_TIMEOUT = 0.5


def encode(message: Message) -> bytes:
    """The message as the server accepts it, or InvalidInput saying why not: the server
    refuses text that is not UTF-8 (a lone surrogate, as Python makes of undecodable bytes in
    a file name or the environment) and NaN or infinite numbers, which are not JSON."""
    try:
        return protocol.encode(message)
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start:exc.end].encode("ascii", "backslashreplace").decode()
        raise InvalidInput(f"cannot send {message.get('type')} to the team server: it holds "
                           f"text that is not valid Unicode ({bad}), e.g. from bytes that are "
                           "not UTF-8") from None
    except ValueError as exc:  # allow_nan=False: "Out of range float values are not JSON ..."
        raise InvalidInput(f"cannot send {message.get('type')} to the team server: {exc}"
                           " (NaN and infinite numbers are not JSON)") from None


class WSClient:
    def __init__(self, settings: ClientSettings, client_id: str) -> None:
        self.settings = settings
        self.client_id = client_id
        self.generation = 0
        """Connections opened so far."""
        self.restored = 0
        """Connections whose ``on_connect`` callbacks have all run."""
        self.last_error: OrcError | None = None
        self.on_late: Listener | None = None
        self._link: Link | None = None
        lock = threading.Lock()
        self._state = threading.Condition(lock)
        """Guards the connection, the read turn and the replies; notified when any changes."""
        self._parked = threading.Condition(lock)
        """Where the pump waits for its turn; requesters never need to wake it."""
        self._reader: int | None = None
        """The thread holding the read turn."""
        self._pumping = False
        """The pump holds the turn and nobody has woken it yet."""
        self._quiet_at = 0.0
        self._connecting = threading.Lock()
        self._send_lock = threading.Lock()
        self._replies = Replies(self._state)
        self._listeners: list[Listener] = []
        self._on_connect: list[Callback] = [self._resubscribe]
        self._wanted: list[Callable[[], bool]] = []
        self._subscriptions: dict[tuple[str, str], None] = {}
        self._closed = False
        self._stop = threading.Event()
        self._reconnector: threading.Thread | None = None
        self._backoff = Backoff(settings.backoff_initial, settings.backoff_cap)
        _clients.add(self)

    # -- wiring ----------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Called, from whichever thread is reading, with every message that is not a reply:
        keep it short (a request waits behind it)."""
        self._listeners.append(listener)

    def on_connect(self, callback: Callback) -> None:
        self._on_connect.append(callback)

    def keep_connected_while(self, wanted: Callable[[], bool]) -> None:
        """Reconnect after a loss as long as ``wanted()`` (e.g. while locks are held)."""
        self._wanted.append(wanted)

    @property
    def connected(self) -> bool:
        return self._link is not None

    # -- connecting ------------------------------------------------------------------------

    def connect(self) -> Link:
        """The open connection, opening one now if needed (at most ``open_timeout``)."""
        link = self._link
        if link is not None:
            return link
        if not self._connecting.acquire(timeout=self.settings.open_timeout + 0.5):
            raise LockerUnavailable(f"still connecting to the team server at "
                                    f"{self.settings.base_url}")
        try:
            link = self._link
            if link is not None:
                return link
            if self._closed:
                raise LockerUnavailable("the team client is closed")
            link = open_link(self.settings, self.client_id)
            with self._state:
                if self._closed:  # closed while connecting: do not leave it open
                    link.dispose()
                    raise LockerUnavailable("the team client is closed")
                self._link = link
                self.generation += 1
                generation = self.generation
                self._quiet_at = time.monotonic() + QUIET  # the caller's request comes first
                self._state.notify_all()
            self._backoff.reset()
            threading.Thread(target=self._pump, args=(link,), daemon=True,
                             name=f"orc-team-reader-{generation}").start()
        finally:
            self._connecting.release()
        log.debug("connected to %s as %s (connection %d)", self.settings.base_url,
                  self.client_id, generation)
        self._restore()
        return link

    def _restore(self) -> None:
        for callback in list(self._on_connect):
            try:
                callback()
            except OrcError as exc:
                log.debug("restoring after connecting failed: %s", exc.message)
            except Exception:
                log.exception("restoring after connecting failed")
        with self._state:
            self.restored += 1
            self._state.notify_all()

    def wait_for(self, predicate: Callable[[WSClient], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds, re-checked whenever a connection opens, is
        restored or is lost, and after every message that is not a reply (for tests and
        tools: no polling)."""
        with self._state:
            return self._state.wait_for(lambda: predicate(self), timeout)

    # -- reading ---------------------------------------------------------------------------

    def _read_until(self, link: Link, done: Callable[[], bool], deadline: float) -> bool:
        """Take the read turn and read until ``done()`` or ``deadline``; another thread's read
        may end it first.  Returns ``done()``."""
        me = threading.get_ident()
        with self._state:
            while not done():
                if self._reader is None or self._reader == me:
                    break
                if self._pumping:
                    self._pumping = False
                    link.wake()
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._state.wait(left)
            else:
                return True
            nested = self._reader == me  # a listener's request, under its reader's turn
            self._reader = me
        try:
            while not done() and link.ended is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._take(link.read(left))
        finally:
            if not nested:
                with self._state:
                    self._reader = None
                    self._state.notify_all()
        if link.ended is not None:
            self._lost(link, closed_error(link.ended, self.settings.base_url))
        return done()

    def _pump(self, link: Link) -> None:
        """The connection's own thread: reads while nobody else needs to, sends keepalive
        pings, and frees the connection once it is lost and nobody reads it any more."""
        me = threading.get_ident()
        try:
            while True:
                due = link.keepalive_due(time.monotonic())
                if due is None:
                    log.debug("no answer to a keepalive ping: dropping the connection")
                    link.abort()  # whoever reads next sees the end at once
                    due = QUIET
                with self._state:
                    wait = self._turn_in()
                    if link.lost and self._reader is None:
                        return
                    if wait > 0:
                        self._parked.wait(min(wait, due))
                        continue
                    self._reader = me
                    self._pumping = True
                try:
                    self._pump_turn(link, due)
                finally:
                    with self._state:
                        self._reader = None
                        self._pumping = False
                        self._state.notify_all()
                if link.ended is not None:
                    self._lost(link, closed_error(link.ended, self.settings.base_url))
        except Exception as exc:  # never leave requests waiting on a dead pump
            log.debug("the reader failed: %r", exc)
            link.abort()
            self._lost(link, LockerUnavailable("connection to the team server lost"))
        finally:
            link.dispose()

    def _turn_in(self) -> float:
        """Seconds before the pump may take the read turn (0: now).  Call under the lock."""
        if self._reader is not None or self._replies.waiting():
            return QUIET
        if self._closed:  # close() reads the end itself, then marks the link lost
            return CLOSE_TIMEOUT
        return self._quiet_at - time.monotonic()

    def _pump_turn(self, link: Link, due: float) -> None:
        deadline = time.monotonic() + due
        while link.ended is None:
            messages = link.read_or_wake(max(deadline - time.monotonic(), 0.0))
            if messages is None:  # a requester wants the turn
                return
            if not messages and time.monotonic() >= deadline:
                return  # time to look at the keepalive
            self._take(messages)

    def _take(self, messages: list[bytes]) -> None:
        for raw in messages:
            try:
                message = protocol.decode(raw)
            except (ValueError, RecursionError):
                log.debug("ignored a message that is not strict JSON")
                continue
            if isinstance(message, dict):
                self._dispatch(message)

    def _dispatch(self, message: Message) -> None:
        routed = self._replies.deliver(message) if message.get("id") is not None else None
        if routed == "reply":
            return
        if routed == "late":
            if self.on_late is not None:
                self._call(self.on_late, message)
            return
        for listener in list(self._listeners):
            self._call(listener, message)
        with self._state:  # wait_for() callers may be waiting on what a listener recorded
            self._state.notify_all()

    @staticmethod
    def _call(listener: Listener, message: Message) -> None:
        try:
            listener(message)
        except Exception:
            log.exception("a team client listener failed")

    def _lost(self, link: Link, why: OrcError) -> None:
        with self._state:
            if link.lost:
                return
            link.lost = True
            if self._link is link:
                self._link = None  # first: a request registered after this sees it gone
            self.last_error = why
            self._state.notify_all()
            self._parked.notify_all()
        self._replies.fail(link, why)
        if not self._closed:
            log.debug("connection lost: %s", why.message)
            self._start_reconnecting()

    # -- reconnecting ----------------------------------------------------------------------

    def _wants_connection(self) -> bool:
        return bool(self._subscriptions) or any(wanted() for wanted in self._wanted)

    def _start_reconnecting(self) -> None:
        with self._state:
            if self._reconnector is not None or not self._wants_connection():
                return
            self._reconnector = threading.Thread(target=self._reconnect_loop, daemon=True,
                                                 name="orc-team-reconnect")
            self._reconnector.start()

    def _reconnect_loop(self) -> None:
        while True:
            with self._state:
                # Decided under the lock _start_reconnecting takes: a loss right after this
                # check either sees this thread still running or starts a new one.
                if self._closed or self._link is not None or not self._wants_connection():
                    self._reconnector = None
                    return
            if self._stop.wait(self._backoff.next()):
                continue
            try:
                self.connect()
            except OrcError as exc:
                log.debug("reconnecting to %s failed: %s", self.settings.base_url, exc.message)

    # -- requests --------------------------------------------------------------------------

    def request(self, type_: str, data: dict[str, Any] | None = None, *,
                timeout: float | None = None, data_json: bytes | None = None) -> Message:
        """Send ``{type, id, data}`` and return the reply with that id.  Raises
        LockerUnavailable when the server cannot be reached or does not answer in time,
        ServerError for an ``error`` reply.  ``data_json``: ``data`` already encoded (strict
        UTF-8 JSON), sent as it is: the outbox keeps its events as wire text.  With several
        server URLs, a request whose connection was lost is sent once more, on a connection to
        the next instance (each request is safe to repeat there: the same holder's ``lock`` is
        an extension, an event is recognised by its ``event_id``)."""
        link = self.connect()
        try:
            return self._request(link, type_, data, timeout, data_json)
        except LockerUnavailable:
            if len(self.settings.urls) < 2 or self._link is link:  # one server, or a timeout
                raise
        return self._request(self.connect(), type_, data, timeout, data_json)

    def _request(self, link: Link, type_: str, data: dict[str, Any] | None,
                 timeout: float | None, data_json: bytes | None) -> Message:
        task_id = (data or {}).get("task_id")
        pending = self._replies.open(type_, link, task_id if isinstance(task_id, str) else None)
        if self._link is not link:  # lost before this request could be failed with it
            self._replies.cancel(pending)
            raise self.last_error or LockerUnavailable("connection to the team server lost")
        message: Message | bytes = protocol.message(type_, pending.id, data)
        if data_json is not None:
            # type_ is one of the protocol's names and the id ours: neither needs escaping
            message = b"".join((b'{"type":"', type_.encode(), b'","id":"', pending.id.encode(),
                                b'","data":', data_json, b"}"))
        wait = self.settings.request_timeout if timeout is None else timeout
        try:
            self._send(link, message)
        except OrcError:  # unavailable, or InvalidInput: nothing was sent
            self._replies.cancel(pending)
            raise
        try:
            answered = self._answer(link, pending, time.monotonic() + wait)
        finally:
            self._quiet_at = time.monotonic() + QUIET
        if not answered:
            raise LockerUnavailable(f"the team server at {self.settings.base_url} did not "
                                    f"answer {type_} within {wait:g} s")
        return pending.result()

    def _answer(self, link: Link, pending: Pending, deadline: float) -> bool:
        """Read until ``pending`` ends; on a timeout, abandon it (a later reply is late)."""
        return (self._read_until(link, lambda: pending.done, deadline)
                or self._replies.abandon(pending))

    def send(self, type_: str, data: dict[str, Any] | None = None, *,
             unless_in_flight: str | None = None) -> bool:
        """Fire and forget, on the current connection only (no connect); False if not sent.
        ``unless_in_flight``: not when a request about that task awaits its reply, decided
        under the send lock, so such a request is either seen here or sent after this."""
        link = self._link
        if link is None:
            return False
        message = protocol.message(type_, data=data or {})
        try:
            self._send(link, message, unless_in_flight)
        except LockerUnavailable:
            return False
        return True

    def _send(self, link: Link, message: Message | bytes,
              unless_in_flight: str | None = None) -> None:
        data = message if isinstance(message, bytes) else encode(message)
        try:
            with self._send_lock:
                if unless_in_flight is not None and self._replies.in_flight(unless_in_flight):
                    raise LockerUnavailable(f"a request about {unless_in_flight} is in flight")
                link.send_text(data)
        except OSError as exc:
            raise LockerUnavailable(f"connection to the team server lost: {exc}") from None

    # -- subscriptions ---------------------------------------------------------------------

    def subscribe(self, *, task_id: str | None = None,
                  project_id: str | None = None) -> dict[str, Any]:
        """Subscribe to a task or a project; kept and renewed on every reconnect."""
        key = _target(task_id, project_id)
        reply = self.request(protocol.SUBSCRIBE, {f"{key[0]}_id": key[1]})
        with self._state:
            self._subscriptions[key] = None
        data: dict[str, Any] = reply.get("data") or {}
        return data

    def unsubscribe(self, *, task_id: str | None = None, project_id: str | None = None) -> None:
        key = _target(task_id, project_id)
        with self._state:
            self._subscriptions.pop(key, None)
        self.request(protocol.UNSUBSCRIBE, {f"{key[0]}_id": key[1]})

    def _resubscribe(self) -> None:
        for kind, value in list(self._subscriptions):
            try:
                self.request(protocol.SUBSCRIBE, {f"{kind}_id": value})
            except ServerError as exc:
                log.warning("could not subscribe again to %s %s: %s", kind, value, exc.message)

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close with a close frame and wait (briefly) for its echo, so the server sees a clean
        close; requests still waiting fail."""
        with self._state:
            self._closed = True
            link = self._link
            self._parked.notify_all()
        self._stop.set()
        if link is None:
            return
        try:
            link.send_close()
        except OSError as exc:  # closing a broken connection must not fail the caller
            log.debug("closing the connection failed: %r", exc)
        if not self._read_until(link, lambda: link.ended is not None,
                                time.monotonic() + CLOSE_TIMEOUT):
            link.abort()
            self._lost(link, LockerUnavailable("the team client is closed"))


def _target(task_id: str | None, project_id: str | None) -> tuple[str, str]:
    if (task_id is None) == (project_id is None):
        raise ValueError("give exactly one of task_id and project_id")
    return ("task", task_id) if task_id is not None else ("project", str(project_id))


_clients: weakref.WeakSet[WSClient] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Close connections with a close frame at exit, so the server logs a clean disconnect."""
    for client in list(_clients):
        client.close()
