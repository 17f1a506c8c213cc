"""A WebSocket client for sync code: requests with replies, and a connection that heals itself.

Built on the websockets library's sync client.  A reader thread per connection routes each reply
to its request by ``id`` and everything else (events, presence) to listeners, so any thread (the
CLI, the heartbeat thread) can ``request()`` and wait with a timeout.  Failing fast is the point:
the file lease is the fallback, so a dead server must cost well under a second, never a long
timeout.  A refused TCP connect fails at once, the handshake is bounded by ``open_timeout`` and a
request by ``request_timeout``; all of these raise LockerUnavailable.  A request that times out
leaves its connection open, since a slow server (or one resumed after SIGSTOP) may still answer;
the library's keepalive ping drops a connection whose peer is really gone.

Connections are opened on demand.  When one is lost while there is something to restore (locks
held, subscriptions), a reconnect thread retries with capped exponential backoff and jitter, and
every new connection runs the ``on_connect`` callbacks: re-subscribe, and the locker's
re-assertion of its held locks.  Replies that arrive after their request timed out are not
dropped silently: they go to ``on_late`` (a lock granted after we gave up must be given back).
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orc_git.errors import LockerUnavailable, OrcError

from orc_team.client.backoff import Backoff
from orc_team.client.dial import closed_error, open_connection
from orc_team.client.replies import Message, Replies, ServerError
from orc_team.client.settings import ClientSettings

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

log = logging.getLogger("orc_team.client")
log.addHandler(logging.NullHandler())  # library chatter must not reach stderr via lastResort

Callback = Callable[[], None]
Listener = Callable[[Message], None]


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
        self._ws: ClientConnection | None = None
        self._state = threading.Condition()
        self._connecting = threading.Lock()
        self._send_lock = threading.Lock()
        self._replies = Replies()
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
        """Called from the reader thread with every message that is not a reply: keep it short."""
        self._listeners.append(listener)

    def on_connect(self, callback: Callback) -> None:
        self._on_connect.append(callback)

    def keep_connected_while(self, wanted: Callable[[], bool]) -> None:
        """Reconnect after a loss as long as ``wanted()`` (e.g. while locks are held)."""
        self._wanted.append(wanted)

    @property
    def connected(self) -> bool:
        return self._ws is not None

    # -- connecting ------------------------------------------------------------------------

    def connect(self) -> ClientConnection:
        """The open connection, opening one now if needed (at most ``open_timeout``)."""
        ws = self._ws
        if ws is not None:
            return ws
        if not self._connecting.acquire(timeout=self.settings.open_timeout + 0.5):
            raise LockerUnavailable(f"still connecting to the team server at "
                                    f"{self.settings.base_url}")
        try:
            ws = self._ws
            if ws is not None:
                return ws
            if self._closed:
                raise LockerUnavailable("the team client is closed")
            ws = open_connection(self.settings, self.client_id)
            with self._state:
                if self._closed:  # closed while connecting: do not leave it open
                    ws.close()
                    raise LockerUnavailable("the team client is closed")
                self._ws = ws
                self.generation += 1
                generation = self.generation
                self._state.notify_all()
            self._backoff.reset()
            threading.Thread(target=self._read, args=(ws,), daemon=True,
                             name=f"orc-team-reader-{generation}").start()
        finally:
            self._connecting.release()
        log.debug("connected to %s as %s (connection %d)", self.settings.base_url,
                  self.client_id, generation)
        self._restore()
        return ws

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

    def _read(self, ws: ClientConnection) -> None:
        from websockets.exceptions import ConnectionClosed

        why: OrcError = LockerUnavailable("connection to the team server lost")
        try:
            while True:
                raw = ws.recv()
                try:
                    message = json.loads(raw)
                except ValueError:
                    log.debug("ignored a message that is not JSON")
                    continue
                if isinstance(message, dict):
                    self._dispatch(message)
        except ConnectionClosed as exc:
            why = closed_error(exc, self.settings.base_url)
        except Exception as exc:  # never leave requests waiting on a dead reader
            log.debug("reader failed: %r", exc)
        finally:
            self._lost(ws, why)

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

    def _lost(self, ws: ClientConnection, why: OrcError) -> None:
        with self._state:
            if self._ws is ws:
                self._ws = None  # first: a request registered after this sees it gone
            self.last_error = why
            self._state.notify_all()
        self._replies.fail(ws, why)
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
                if self._closed or self._ws is not None or not self._wants_connection():
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
                timeout: float | None = None) -> Message:
        """Send ``{type, id, data}`` and return the reply with that id.  Raises
        LockerUnavailable when the server cannot be reached or does not answer in time,
        ServerError for an ``error`` reply."""
        ws = self.connect()
        task_id = (data or {}).get("task_id")
        pending = self._replies.open(type_, ws, task_id if isinstance(task_id, str) else None)
        if self._ws is not ws:  # lost before the reader could fail this request
            self._replies.cancel(pending)
            raise self.last_error or LockerUnavailable("connection to the team server lost")
        message: Message = {"type": type_, "id": pending.id}
        if data is not None:
            message["data"] = data
        try:
            self._send(ws, message)
        except LockerUnavailable:
            self._replies.cancel(pending)
            raise
        wait = self.settings.request_timeout if timeout is None else timeout
        if not self._replies.wait(pending, wait):
            raise LockerUnavailable(f"the team server at {self.settings.base_url} did not "
                                    f"answer {type_} within {wait:g} s")
        return pending.result()

    def send(self, type_: str, data: dict[str, Any] | None = None, *,
             unless_in_flight: str | None = None) -> bool:
        """Fire and forget, on the current connection only (no connect); False if not sent.
        ``unless_in_flight``: not when a request about that task awaits its reply, decided
        under the send lock, so such a request is either seen here or sent after this."""
        ws = self._ws
        if ws is None:
            return False
        message = {"type": type_, "data": data or {}}
        try:
            self._send(ws, message, unless_in_flight)
        except LockerUnavailable:
            return False
        return True

    def _send(self, ws: ClientConnection, message: Message,
              unless_in_flight: str | None = None) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            with self._send_lock:
                if unless_in_flight is not None and self._replies.in_flight(unless_in_flight):
                    raise LockerUnavailable(f"a request about {unless_in_flight} is in flight")
                ws.send(json.dumps(message, separators=(",", ":")))
        except (ConnectionClosed, OSError) as exc:
            raise LockerUnavailable(f"connection to the team server lost: {exc}") from None

    # -- subscriptions ---------------------------------------------------------------------

    def subscribe(self, *, task_id: str | None = None,
                  project_id: str | None = None) -> dict[str, Any]:
        """Subscribe to a task or a project; kept and renewed on every reconnect."""
        key = _target(task_id, project_id)
        reply = self.request("subscribe", {f"{key[0]}_id": key[1]})
        with self._state:
            self._subscriptions[key] = None
        data: dict[str, Any] = reply.get("data") or {}
        return data

    def unsubscribe(self, *, task_id: str | None = None, project_id: str | None = None) -> None:
        key = _target(task_id, project_id)
        with self._state:
            self._subscriptions.pop(key, None)
        self.request("unsubscribe", {f"{key[0]}_id": key[1]})

    def _resubscribe(self) -> None:
        for kind, value in list(self._subscriptions):
            try:
                self.request("subscribe", {f"{kind}_id": value})
            except ServerError as exc:
                log.warning("could not subscribe again to %s %s: %s", kind, value, exc.message)

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        with self._state:
            self._closed = True
            ws = self._ws
        self._stop.set()
        if ws is not None:
            try:
                ws.close()
            except Exception as exc:  # closing a broken connection must not fail the caller
                log.debug("closing the connection failed: %r", exc)


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
