"""The outbox: every published event, kept on disk until the team server has it.

One SQLite file per clone, ``outbox.sqlite3`` in the main worktree's ``.orc/local/`` (where the
leases live, shared by all worktrees), in WAL mode with ``synchronous=NORMAL``: a commit is a
write into the WAL, no fsync, so an append costs tens of microseconds and survives ``kill -9`` of
the writer (the kernel has the bytes; only a crash of the machine can lose the last commits).
Several processes append at once (SQLite's own locking); one drains at a time (the sender's
file lock, :mod:`orc_team.client.sender`).

A row is ``seq`` (append order, across processes), ``event_id``, the ``client`` instance that
made it (the sender delivers as that holder: the server takes a locked task's events only from
its lease holder), ``made_at``, the PublishData JSON, ``state`` (``pending`` or ``rejected``) and
the rejection's error.  A delivered event is deleted in the transaction that records its ack: the
server is the record from then on, and the outbox stays a short queue whose oldest pending rows
are its first rows.  Rejected rows stay for ``orc team outbox`` to show, the newest
:data:`KEEP_REJECTED` of them.

Faults never stop a run.  A file that is not a database (or is malformed) is moved aside as
``outbox.sqlite3.corrupt-<time>`` (what can still be read from it is copied over) and a fresh one
is used; a directory that cannot be written (read-only, permissions, full) means an in-memory
outbox for the rest of the process.  Either way the user is told once, on the ``orc_git.team``
logger, which the CLI prints; events kept only in memory and not delivered by the end of the
process are counted in a last warning, never dropped silently.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("orc_git.team")

FILE_NAME = "outbox.sqlite3"
KEEP_REJECTED = 1000
BUSY_TIMEOUT_MS = 2000
"""How long a write waits for another process's transaction (all of them are short)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    client TEXT NOT NULL,
    made_at REAL NOT NULL,
    data TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    error TEXT
)"""

INSERT = "INSERT INTO outbox(event_id, client, made_at, data) VALUES (?, ?, ?, ?)"

T = TypeVar("T")
_memory_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Row:
    seq: int
    event_id: str
    client: str
    made_at: float
    data: str
    """The PublishData, as the JSON text that goes on the wire."""


NewRow = tuple[str, str, float, str]
"""(event_id, client, made_at, data): what :meth:`Outbox.append` takes."""


def _corrupt(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return (not isinstance(exc, sqlite3.OperationalError) and isinstance(exc, sqlite3.DatabaseError)
            ) or "malformed" in text or "not a database" in text


class Outbox:
    """One connection shared by the threads of a process (the publisher and its sender), each
    operation one transaction under a mutex."""

    def __init__(self, local_dir: Path | None) -> None:
        """``local_dir`` None: in memory from the start (tests, and the last resort)."""
        self.local_dir = local_dir
        self.path = local_dir / FILE_NAME if local_dir is not None else None
        self.in_memory = False
        self._mutex = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._told = False

    # -- opening and the faults ------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        if self.path is None or self.in_memory:
            self._db = self._open_memory()
            return self._db
        try:
            self._db = self._open_file(self.path)
        except (sqlite3.Error, OSError) as exc:
            self._recover(exc)
        assert self._db is not None
        return self._db

    @staticmethod
    def _open_file(path: Path) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created readable by its owner only (SQLite gives the -wal and -shm files the same
        # mode): it holds the output of the user's commands.  An empty file is an empty database.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                             timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            if db.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
                raise sqlite3.OperationalError("cannot use WAL mode here")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _open_memory(self) -> sqlite3.Connection:
        self.in_memory = True
        db = sqlite3.connect(f"file:orc-outbox-{os.getpid()}-{next(_memory_ids)}?mode=memory",
                             uri=True, isolation_level=None, check_same_thread=False)
        db.execute(SCHEMA)
        return db

    def _recover(self, exc: BaseException) -> None:
        """After a failure of the file: a corrupt one is moved aside and replaced, an unusable
        one left for memory.  Tells the user once."""
        old, self._db = self._db, None
        if old is not None:
            old.close()
        assert self.path is not None
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if isinstance(exc, sqlite3.Error) and _corrupt(exc):
            aside = self.path.with_name(f"{FILE_NAME}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            try:
                with contextlib.suppress(FileNotFoundError):  # another process moved it
                    os.replace(self.path, aside)
                for suffix in ("-wal", "-shm"):
                    if Path(f"{self.path}{suffix}").exists():
                        os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
                self._db = self._open_file(self.path)
            except (sqlite3.Error, OSError) as again:
                self._tell(f"the outbox {self.path} is corrupt ({why}) and could not be "
                           f"replaced ({again}); events are kept in memory until this command "
                           "ends")
                self._db = self._open_memory()
                return
            saved = self._salvage(aside)
            self._tell(f"the outbox {self.path} was corrupt ({why}): moved aside to {aside} "
                       f"({saved} pending events recovered from it); a fresh outbox is used")
            return
        self._tell(f"cannot write the outbox in {self.path.parent} ({why}); events are kept in "
                   "memory until this command ends, and sent from there")
        self._db = self._open_memory()

    def _salvage(self, aside: Path) -> int:
        """Copy what can still be read of the pending rows from a corrupt file."""
        rows: list[tuple[Any, ...]] = []
        try:
            old = sqlite3.connect(f"file:{aside}?mode=ro", uri=True)
            try:
                cursor = old.execute("SELECT event_id, client, made_at, data FROM outbox "
                                     "WHERE state = 'pending' ORDER BY seq")
                while True:
                    try:
                        row = cursor.fetchone()
                    except sqlite3.Error:
                        break
                    if row is None:
                        break
                    if _is_object(row[3]):  # sent as it is stored: only whole JSON objects
                        rows.append(row)
            finally:
                old.close()
        except sqlite3.Error:
            pass
        if rows and self._db is not None:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(INSERT, rows)
        return len(rows)

    def _tell(self, message: str) -> None:
        if not self._told:
            self._told = True
            log.warning("%s", message)

    def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """One operation under the mutex; a failure of the file recovers, then retries once
        (on the fresh file or in memory)."""
        with self._mutex:
            db = self._connect()
            try:
                return operation(db)
            except sqlite3.Error as exc:  # also "locked" past the busy timeout: a writer
                if self.in_memory:        # stopped mid-transaction must not stop this one
                    raise
                self._recover(exc)
            return operation(self._connect())

    # -- writing ---------------------------------------------------------------------------

    def append(self, rows: Sequence[NewRow]) -> None:
        """Keep ``rows``, in order, in one transaction (one commit whatever their number)."""
        if not rows:
            return

        def insert(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(INSERT, rows)
        self._run(insert)

    def settle(self, delivered: Sequence[int], rejected: Sequence[tuple[int, dict[str, str]]]
               ) -> None:
        """Record a batch's acks: delivered rows go, rejected ones keep their error."""
        if not delivered and not rejected:
            return

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in delivered])
                db.executemany("UPDATE outbox SET state = 'rejected', error = ? WHERE seq = ?",
                               [(json.dumps(error), s) for s, error in rejected])
                if rejected:
                    db.execute("DELETE FROM outbox WHERE state = 'rejected' AND seq NOT IN "
                               "(SELECT seq FROM outbox WHERE state = 'rejected' "
                               "ORDER BY seq DESC LIMIT ?)", (KEEP_REJECTED,))
        self._run(write)

    # -- reading ---------------------------------------------------------------------------

    def pending(self, limit: int) -> list[Row]:
        """The oldest ``limit`` pending rows, oldest first."""
        def read(db: sqlite3.Connection) -> list[Row]:
            return [Row(*r) for r in db.execute(
                "SELECT seq, event_id, client, made_at, data FROM outbox "
                "WHERE state = 'pending' ORDER BY seq LIMIT ?", (limit,))]
        return self._run(read)

    def counts(self) -> dict[str, int]:
        """``{"pending": N, "rejected": M}``."""
        def read(db: sqlite3.Connection) -> dict[str, int]:
            found = dict(db.execute("SELECT state, count(*) FROM outbox GROUP BY state"))
            return {"pending": found.get("pending", 0), "rejected": found.get("rejected", 0)}
        return self._run(read)

    def waiting(self, at_most: int) -> int:
        """How many rows are pending, counted up to ``at_most`` (cheap on a large backlog)."""
        def read(db: sqlite3.Connection) -> int:
            found: int = db.execute("SELECT count(*) FROM (SELECT 1 FROM outbox WHERE state = "
                                    "'pending' LIMIT ?)", (at_most,)).fetchone()[0]
            return found
        return self._run(read)

    def listing(self, limit: int) -> list[dict[str, Any]]:
        """The oldest ``limit`` rows of each state, as ``orc team outbox`` shows them."""
        def read(db: sqlite3.Connection) -> list[dict[str, Any]]:
            rows: list[tuple[Any, ...]] = []
            for state in ("rejected", "pending"):
                rows += db.execute("SELECT seq, client, made_at, data, state, error FROM outbox "
                                   "WHERE state = ? ORDER BY seq LIMIT ?", (state, limit))
            rows.sort()
            return [_shown(*row) for row in rows]
        return self._run(read)

    def close(self) -> None:
        with self._mutex:
            if self._db is not None:
                self._db.close()
                self._db = None


def _shown(seq: int, client: str, made_at: float, data: str, state: str,
           error: str | None) -> dict[str, Any]:
    try:
        event: dict[str, Any] = json.loads(data)
    except ValueError:
        event = {}
    shown = {"seq": seq, "event_id": event.get("event_id"),
             "event_type": event.get("event_type"), "task_id": event.get("task_id"),
             "project_id": event.get("project_id"), "made_at": event.get("made_at"),
             "client": client, "state": state}
    if error is not None:
        try:
            shown["error"] = json.loads(error)
        except ValueError:
            shown["error"] = {"code": "UNKNOWN", "message": error}
    return shown


def _is_object(data: object) -> bool:
    try:
        return isinstance(data, str) and isinstance(json.loads(data), dict)
    except ValueError:
        return False


def exists(local_dir: Path) -> bool:
    """Is there an outbox file at all?  (A command with nothing to deliver opens nothing.)"""
    return (local_dir / FILE_NAME).exists()
