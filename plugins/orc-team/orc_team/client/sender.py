"""Delivering the outbox: ``events`` batches, oldest first, and the background thread that sends.

:class:`Drainer` does one delivery pass in the calling thread (``orc team sync`` calls it; so does
the sender's thread): it takes the outbox's file lock (one drainer per clone: two ``orc run`` in
one repository must not both send the same rows), reads the oldest pending rows, packs them into
one ``events`` message (at most MAX_BATCH_EVENTS and under the message size limit, all made by
one client instance, since the server takes a locked task's events only from its holder), and
settles the ``acks``: delivered (``duplicate`` too) rows are deleted, refused ones are rejected
with their error, RATE_LIMITED, INTERNAL and UNAVAILABLE stay pending for a later try.  A
connection cut or a batch that got no answer is sent again: the server drops an ``event_id`` it
already has.

:class:`Sender` is the publisher's side: a daemon thread woken by each publish, which drains,
backs off while the server is away, and sends presence.  Nothing the publisher calls waits on it;
:meth:`Sender.close` waits at most the time it is given.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from orc_git.errors import OrcError

from orc_team import protocol
from orc_team.client.backoff import Backoff
from orc_team.client.outbox import Outbox, Row
from orc_team.client.replies import ServerError
from orc_team.client.settings import ClientSettings
from orc_team.client.wsclient import WSClient

log = logging.getLogger("orc_team.client")

RETRYABLE = frozenset({protocol.RATE_LIMITED, protocol.INTERNAL, protocol.UNAVAILABLE})
BATCH_TIMEOUT = 5.0
"""Seconds a batch may wait for its ``acks`` (a server storing 200 events is slower than a lock
round trip); never past the caller's deadline."""
ENVELOPE_BYTES = 96
"""Room for ``{"type":"events","id":...,"data":{"events":[...]}}`` around the entries."""
MIN_GAP, MAX_GAP = 0.01, 1.0
SLICE = 10.0
"""Seconds of one background pass before the thread looks at presence and closing again."""
LINGER = 0.005
"""Seconds the sender waits after a publish wakes it, so that a chatty command's lines go out
as one batch rather than one message each (and the thread takes the GIL once, not per line)."""
BUSY_RETRY = 0.25
"""Seconds before trying again when another process holds the drain lock."""
LOCK_FILE = "outbox.drain.lock"
MAX_CONNECTIONS = 4
"""Connections a drainer keeps open at once, one per client instance it delivers as."""


@dataclass
class Drained:
    delivered: int = 0
    rejected: int = 0
    pending: int = 0
    """Left afterwards (rejected ones not counted)."""
    error: OrcError | None = None
    """Why the pass stopped with rows still pending (unreachable, timed out, refused token)."""
    busy: bool = False
    """Another process was draining: it delivers these rows."""
    retry_in: float = 0.0
    """After an error: the backoff before the next try."""


class Retry(Exception):
    """The batch is not settled; try again after a backoff (``code``: the server's, if any)."""

    def __init__(self, error: OrcError, code: str | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.code = code if code is not None else getattr(error, "server_code", None)


class Connections:
    """A WebSocket client per client instance id the outbox's rows were made by; ``own`` (the
    locker's, in a run) is reused, never closed here."""

    def __init__(self, settings: ClientSettings, own: WSClient | None = None) -> None:
        self.settings = settings
        self.own = own
        self._made: dict[str, WSClient] = {}

    def get(self, client_id: str) -> WSClient:
        """The client speaking as ``client_id``; at most MAX_CONNECTIONS are kept open (the
        least recently used is closed): the server caps a user's connections."""
        if self.own is not None and self.own.client_id == client_id:
            return self.own
        client = self._made.pop(client_id, None)
        if client is None:
            client = WSClient(self.settings, client_id)
            while len(self._made) >= MAX_CONNECTIONS:
                self._made.pop(next(iter(self._made))).close()
        self._made[client_id] = client
        return client

    def close(self) -> None:
        for client in self._made.values():
            client.close()
        self._made.clear()


def _fits(rows: list[Row], limit: int) -> list[Row]:
    """The oldest row and the rows after it made by the same client, in order, as many as fit
    one message of ``limit`` bytes (at least one row: the server says whether a single one is
    too large).  Rows of other clients interleaved with them (two runs at once) wait for the
    next batch, which they head: each client's events stay in order, and nobody's wait long."""
    batch: list[Row] = []
    size = ENVELOPE_BYTES
    for row in rows:
        if row.client != rows[0].client:
            continue
        size += len(row.data.encode()) + 1
        if batch and size > limit:
            break
        batch.append(row)
    return batch


class Drainer:
    def __init__(self, outbox: Outbox, connections: Connections) -> None:
        self.outbox = outbox
        self.connections = connections
        self.limit = protocol.MAX_MESSAGE_BYTES
        """Bytes per message; halved when a server with a smaller limit says MESSAGE_TOO_LARGE."""
        self._single = False
        """The server has no ``events`` (UNKNOWN_TYPE): one ``event`` per row."""
        self.backoff = Backoff(0.1, connections.settings.backoff_cap)
        self.gap = 0.0
        """Seconds between batches while the server says RATE_LIMITED."""
        self._turn = threading.Lock()

    @contextlib.contextmanager
    def _lock(self, wait: float) -> Iterator[bool]:
        """The single-drainer lock: the file lock for a file outbox (across processes), this
        process's own lock for a memory one."""
        if not self._turn.acquire(timeout=max(wait, 0.0)):
            yield False
            return
        try:
            local = self.outbox.local_dir
            if self.outbox.in_memory or local is None:
                yield True
                return
            from filelock import FileLock, Timeout

            lock = FileLock(local / LOCK_FILE, thread_local=False)
            try:
                lock.acquire(timeout=max(wait, 0.0), poll_interval=0.02)
            except Timeout:
                yield False
                return
            except OSError:  # cannot even create the lock file: drain unguarded
                yield True
                return
            try:
                yield True
            finally:
                lock.release()
        finally:
            self._turn.release()

    def drain(self, deadline: Callable[[], float], *, wait_lock: bool = False,
              retries: int = 0, exact: bool = True) -> Drained:
        """Deliver until the outbox is empty or ``deadline()`` (a monotonic time) passes;
        ``retries``: how many failed tries in a row to back off from (within the deadline)
        before giving up; ``wait_lock``: wait for another drainer rather than leave it to it;
        ``exact``: count what is left (else only whether anything is: cheap on a backlog)."""
        result = Drained()
        failures = 0
        while True:
            settled = result.delivered + result.rejected
            try:
                self._connect_first()
                wait = deadline() - time.monotonic() if wait_lock else 0.0
                with self._lock(wait) as mine:
                    if not mine:
                        result.busy = True
                    else:
                        self._drain(deadline, result)
                break
            except (Retry, OrcError) as exc:
                result.error = exc.error if isinstance(exc, Retry) else exc
                failures = 1 if result.delivered + result.rejected > settled else failures + 1
                result.retry_in = self.backoff.next()
                pause = min(result.retry_in, deadline() - time.monotonic())
                if failures > retries or pause <= 0:
                    break
                time.sleep(pause)
        result.pending = self.outbox.counts()["pending"] if exact else self.outbox.waiting(1)
        return result

    def _connect_first(self) -> None:
        """Open the connection for the oldest row before taking the lock: a server that
        accepts and never answers holds up this process, not every drainer of the clone."""
        oldest = self.outbox.pending(1)
        if oldest:
            self.connections.get(oldest[0].client).connect()

    def _drain(self, deadline: Callable[[], float], result: Drained) -> None:
        """Batches until the outbox is empty or the deadline; raises Retry.  RATE_LIMITED
        spaces the batches out instead (the gap doubles on each refusal, shrinks on each
        success): a backlog goes at the server's rate, not in bursts of refusals."""
        while deadline() > time.monotonic():
            rows = self.outbox.pending(protocol.MAX_BATCH_EVENTS)
            if not rows:
                result.error = None
                return
            if self.gap:
                time.sleep(min(self.gap, max(deadline() - time.monotonic(), 0.0)))
            try:
                self._send(rows, deadline() - time.monotonic(), result)
            except Retry as exc:
                if exc.code != protocol.RATE_LIMITED:
                    raise
                self.gap = min(max(self.gap * 2, MIN_GAP), MAX_GAP)
                continue
            self.gap = self.gap * 0.9 if self.gap > MIN_GAP / 4 else 0.0
            self.backoff.reset()

    def _send(self, rows: list[Row], left: float, result: Drained) -> None:
        """One message of the oldest rows, sent as the JSON text they are stored as."""
        batch = _fits(rows, self.limit) if not self._single else rows[:1]
        client = self.connections.get(batch[0].client)
        timeout = min(BATCH_TIMEOUT, left)
        acks: Any
        try:
            if self._single:
                reply = client.request(protocol.EVENT, timeout=timeout,
                                       data_json=batch[0].data.encode())
                acks = [{**(reply.get("data") or {}), "event_id": batch[0].event_id}]
            else:
                entries = ",".join(row.data for row in batch)
                reply = client.request(protocol.EVENTS, timeout=timeout,
                                       data_json=f'{{"events":[{entries}]}}'.encode())
                data = reply.get("data") or {}
                acks = data.get("acks") if isinstance(data, dict) else None
        except ServerError as exc:
            self._refused(batch, exc, result)
            return
        except OrcError as exc:  # unreachable, timed out, token refused, closed
            raise Retry(exc) from None
        if not isinstance(acks, list):
            raise Retry(OrcError("the team server answered events without acks"))
        self._settle(batch, acks, result)

    def _refused(self, batch: list[Row], exc: ServerError, result: Drained) -> None:
        """An ``error`` for the whole message."""
        code = exc.server_code
        if code == protocol.UNKNOWN_TYPE and not self._single:
            log.debug("the team server has no events batches: sending one event at a time")
            self._single = True
            return
        if code in RETRYABLE:
            raise Retry(exc)
        if len(batch) > 1:  # find the culprit: smaller messages (and learn a smaller limit)
            if code == protocol.MESSAGE_TOO_LARGE:
                self.limit = max(self.limit // 2, 1024)
            else:
                self._bisect(batch, result)
            return
        self.outbox.settle([], [(batch[0].seq, {"code": code, "message": exc.server_message})])
        result.rejected += 1

    def _bisect(self, batch: list[Row], result: Drained) -> None:
        """A refusal of a whole batch for one bad entry: send its first half; the next pass
        sends the rest, until the culprit is alone and rejected."""
        self._send(batch[: len(batch) // 2], BATCH_TIMEOUT, result)

    def _settle(self, batch: list[Row], acks: list[Any], result: Drained) -> None:
        """The acks come in the batch's order; matched by ``event_id`` when they do not."""
        if len(acks) == len(batch):
            paired = [(row, a if isinstance(a, dict) else None)
                      for row, a in zip(batch, acks, strict=True)]
        else:
            by_id = {a.get("event_id"): a for a in acks if isinstance(a, dict)}
            paired = [(row, by_id.get(row.event_id)) for row in batch]
        delivered: list[int] = []
        rejected: list[tuple[int, dict[str, str]]] = []
        retry: Retry | None = None
        for row, ack in paired:
            error = ack.get("error") if ack is not None else None
            if ack is None:
                retry = Retry(OrcError(f"the team server did not acknowledge {row.event_id}"))
            elif isinstance(error, dict):
                code = str(error.get("code", protocol.INTERNAL))
                if code in RETRYABLE:
                    retry = Retry(OrcError(f"the team server answered {code}: "
                                           f"{error.get('message', '')}"), code)
                else:
                    rejected.append((row.seq, {"code": code,
                                               "message": str(error.get("message", ""))}))
            else:
                delivered.append(row.seq)
        self.outbox.settle(delivered, rejected)
        result.delivered += len(delivered)
        result.rejected += len(rejected)
        if retry is not None:
            raise retry


class Sender:
    """The background half: a daemon thread started on the first publish."""

    def __init__(self, drainer: Drainer, own_client_id: str) -> None:
        self.drainer = drainer
        self.own_client_id = own_client_id
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._close_at: float | None = None
        self._presence: dict[str, Any] | None = None
        self._presence_sent: tuple[int, dict[str, Any]] | None = None
        self._start_lock = threading.Lock()
        self._hooked = False

    def wake(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None and self._close_at is None:
                    self._thread = threading.Thread(target=self._loop, daemon=True,
                                                    name="orc-team-sender")
                    self._thread.start()
        self._wake.set()

    def presence(self, status: str, task_id: str | None) -> None:
        data: dict[str, Any] = {"status": status}
        if task_id is not None:
            data["active_task"] = task_id
        self._presence = data
        self.wake()

    def close(self, timeout: float) -> None:
        """One last pass of at most ``timeout`` seconds; what is left stays in the outbox."""
        self._close_at = time.monotonic() + max(timeout, 0.0)
        thread = self._thread
        if thread is not None:
            self._closing.set()
            self._wake.set()
            thread.join(max(timeout, 0.0) + 0.05)
        self.drainer.connections.close()

    def _deadline(self, end: float) -> Callable[[], float]:
        return lambda: min(end, self._close_at if self._close_at is not None else end)

    def _loop(self) -> None:
        not_before = 0.0
        idle = True
        while True:
            if self._close_at is None:
                delay = not_before - time.monotonic()
                if delay > 0:  # backing off: a publish does not cut that short, closing does
                    self._closing.wait(delay)
                elif idle:
                    self._wake.wait()
                    self._closing.wait(LINGER)  # let a burst of publishes make one batch
            self._wake.clear()
            closing = self._close_at is not None
            try:
                self._send_presence()
                result = self.drainer.drain(self._deadline(time.monotonic() + SLICE),
                                            exact=False)
            except Exception:  # never let the thread die with rows waiting
                log.exception("the outbox sender failed")
                result = Drained(pending=1, error=OrcError("the outbox sender failed"))
            if closing:
                return
            idle = False
            if result.busy:
                not_before = time.monotonic() + BUSY_RETRY
            elif result.error is not None:
                not_before = time.monotonic() + result.retry_in
            else:
                idle = not result.pending

    def _send_presence(self) -> None:
        """Say the latest presence on this process's own connection: again whenever that is a
        new connection (the server clears ``active`` with the connection that set it)."""
        wanted = self._presence
        if wanted is None:
            return
        client = self.drainer.connections.get(self.own_client_id)
        if not self._hooked:
            self._hooked = True
            client.on_connect(self._wake.set)
        try:
            client.connect()
        except OrcError:
            return
        sent = (client.generation, wanted)
        if self._presence_sent == sent:
            return
        if client.send(protocol.PRESENCE, wanted):
            self._presence_sent = sent

