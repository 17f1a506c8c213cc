"""The embedded default store: one SQLite file (stdlib sqlite3), no external service.

Every lock decision is one ``BEGIN IMMEDIATE`` transaction, and the fencing counter lives in the
same database as the lease, bumped in the same transaction: after a restart (SIGTERM or SIGKILL)
the lease is still there and the next grant continues the counter, so nothing is granted twice.
WAL with ``synchronous=NORMAL`` keeps a commit to tens of microseconds; a committed transaction
survives the server process being killed, though not a power loss of the machine.

A ``<store>.lock`` file (flock) keeps a second server off the same store: presence and the
event stream live in one process's memory, so two servers on one file would split them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

from orc_git.errors import OrcError, StorageError

from orc_team.server.store import Grant, Holder, LockRecord, Release, TaskRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, project_id TEXT, fence INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT '{}', updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS locks (
    task_id TEXT PRIMARY KEY, user TEXT NOT NULL, user_name TEXT, user_email TEXT,
    client TEXT NOT NULL, token INTEGER NOT NULL, ttl INTEGER NOT NULL, acquired_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS locks_by_expiry ON locks (expires_at);
CREATE TABLE IF NOT EXISTS projects (
    project_id TEXT PRIMARY KEY, last_offset INTEGER NOT NULL DEFAULT 0);
"""

_LOCK_COLUMNS = ("l.task_id, l.user, l.user_name, l.user_email, l.client, l.token, l.ttl, "
                 "l.acquired_at, l.heartbeat_at, l.expires_at, t.project_id")
_SELECT_LOCK = f"SELECT {_LOCK_COLUMNS} FROM locks l LEFT JOIN tasks t USING (task_id)"


class StoreInUse(OrcError):
    code = "STORE_IN_USE"


def _lock(row: tuple[Any, ...]) -> LockRecord:
    task_id, user, name, email, client, token, ttl, acquired, beat, expires, project = row
    return LockRecord(task_id, Holder(user, client, name, email), token, ttl, acquired, beat,
                      expires, project)


def _task(row: tuple[Any, ...]) -> TaskRecord:
    task_id, project_id, fence, state = row
    return TaskRecord(task_id, project_id, json.loads(state), fence)


class SQLiteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lockfile: int | None = None
        if path != ":memory:":
            self._lockfile = self._claim(path)
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=2000")
            self.db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            self._unclaim()
            raise StorageError(f"cannot open the store {path}: {exc}") from None

    @staticmethod
    def _claim(path: str) -> int:
        parent = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(parent, exist_ok=True)
            fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open the store {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreInUse(f"the store {path} is in use by another orc team server") from None
        return fd

    def _unclaim(self) -> None:
        if self._lockfile is not None:
            os.close(self._lockfile)  # closing drops the flock
            self._lockfile = None

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _ensure_task(self, db: sqlite3.Connection, task_id: str, project_id: str | None,
                     now: float) -> None:
        db.execute("INSERT INTO tasks (task_id, project_id, updated_at) VALUES (?, ?, ?) "
                   "ON CONFLICT (task_id) DO UPDATE SET "
                   "project_id = COALESCE(tasks.project_id, excluded.project_id)",
                   (task_id, project_id, now))

    def _current(self, db: sqlite3.Connection, task_id: str) -> LockRecord | None:
        row = db.execute(f"{_SELECT_LOCK} WHERE l.task_id = ?", (task_id,)).fetchone()
        return _lock(row) if row else None

    async def acquire(self, task_id: str, holder: Holder, ttl: int, now: float, *,
                      steal: bool = False, project_id: str | None = None) -> Grant:
        with self._tx() as db:
            self._ensure_task(db, task_id, project_id, now)
            current = self._current(db, task_id)
            expired = None
            if current is not None and current.expires_at <= now:
                db.execute("DELETE FROM locks WHERE task_id = ?", (task_id,))
                expired, current = current, None
            if current is not None and current.held_by(holder):
                db.execute("UPDATE locks SET ttl = ?, heartbeat_at = ?, expires_at = ?, "
                           "user_name = ?, user_email = ? WHERE task_id = ?",
                           (ttl, now, now + ttl, holder.name, holder.email, task_id))
                return Grant("extended", self._current(db, task_id) or current)
            if current is not None and not steal:
                return Grant("held", current)
            (token,) = db.execute("UPDATE tasks SET fence = fence + 1 WHERE task_id = ? "
                                  "RETURNING fence", (task_id,)).fetchone()
            db.execute("INSERT OR REPLACE INTO locks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (task_id, holder.user, holder.name, holder.email, holder.client, token,
                        ttl, now, now, now + ttl))
            granted = self._current(db, task_id)
            assert granted is not None
            if current is not None:
                return Grant("stolen", granted, expired, current)
            return Grant("acquired", granted, expired)

    async def release(self, task_id: str, holder: Holder | None, now: float) -> Release:
        with self._tx() as db:
            current = self._current(db, task_id)
            if current is None:
                return Release(False, None)
            if current.expires_at <= now:
                db.execute("DELETE FROM locks WHERE task_id = ?", (task_id,))
                return Release(False, None, expired=current)
            if holder is not None and not current.held_by(holder):
                return Release(False, current)
            db.execute("DELETE FROM locks WHERE task_id = ?", (task_id,))
            return Release(True, current)

    async def get_lock(self, task_id: str, now: float) -> LockRecord | None:
        row = self.db.execute(f"{_SELECT_LOCK} WHERE l.task_id = ? AND l.expires_at > ?",
                              (task_id, now)).fetchone()
        return _lock(row) if row else None

    async def list_locks(self, now: float) -> list[LockRecord]:
        rows = self.db.execute(f"{_SELECT_LOCK} WHERE l.expires_at > ? ORDER BY l.task_id",
                               (now,)).fetchall()
        return [_lock(row) for row in rows]

    async def expire(self, now: float) -> list[LockRecord]:
        with self._tx() as db:
            rows = db.execute(f"{_SELECT_LOCK} WHERE l.expires_at <= ?", (now,)).fetchall()
            if rows:
                db.execute("DELETE FROM locks WHERE expires_at <= ?", (now,))
        return [_lock(row) for row in rows]

    async def get_task(self, task_id: str) -> TaskRecord | None:
        row = self.db.execute("SELECT task_id, project_id, fence, state FROM tasks "
                              "WHERE task_id = ?", (task_id,)).fetchone()
        return _task(row) if row else None

    async def project_tasks(self, project_id: str) -> list[TaskRecord]:
        rows = self.db.execute("SELECT task_id, project_id, fence, state FROM tasks "
                               "WHERE project_id = ? ORDER BY task_id", (project_id,)).fetchall()
        return [_task(row) for row in rows]

    async def record_event(self, task_id: str, project_id: str | None,
                           state: dict[str, Any]) -> tuple[int | None, TaskRecord]:
        with self._tx() as db:
            self._ensure_task(db, task_id, project_id, time.time())
            row = db.execute("SELECT task_id, project_id, fence, state FROM tasks "
                             "WHERE task_id = ?", (task_id,)).fetchone()
            task = _task(row)
            if state:
                task.state.update(state)
                db.execute("UPDATE tasks SET state = ? WHERE task_id = ?",
                           (json.dumps(task.state), task_id))
            offset = self._bump(db, project_id) if project_id else None
        return offset, task

    @staticmethod
    def _bump(db: sqlite3.Connection, project_id: str) -> int:
        (offset,) = db.execute(
            "INSERT INTO projects (project_id, last_offset) VALUES (?, 1) "
            "ON CONFLICT (project_id) DO UPDATE SET last_offset = last_offset + 1 "
            "RETURNING last_offset", (project_id,)).fetchone()
        return int(offset)

    async def next_offset(self, project_id: str) -> int:
        with self._tx() as db:
            return self._bump(db, project_id)

    async def last_offset(self, project_id: str) -> int:
        row = self.db.execute("SELECT last_offset FROM projects WHERE project_id = ?",
                              (project_id,)).fetchone()
        return int(row[0]) if row else 0

    async def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        self._unclaim()
