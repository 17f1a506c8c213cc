"""The embedded default store: one SQLite file (stdlib sqlite3), no external service.

Every grant and release is committed before the store answers, and the fencing counter lives in
the same database as the lease, bumped in the same transaction: after a restart (SIGTERM or
SIGKILL) the lease is still there and the next grant continues the counter, so nothing is granted
twice.  WAL with ``synchronous=NORMAL`` keeps a commit to tens of microseconds; a committed
transaction survives the server process being killed, though not a power loss of the machine.

A ``<store>.lock`` file (a :class:`filelock.FileLock`, an flock the kernel drops when the server
dies, however it dies) keeps a second server off the same store: presence and the
event stream live in one process's memory, so two servers on one file would split them.  Being
the only writer is also what lets the store decide from an in-memory mirror of the lock table
(loaded at start, changed only after a commit succeeds) and of the fencing and offset counters
it has used: a decision reads nothing from SQLite and a change writes known values (RETURNING
costs more than the rest of a statement in the sqlite3 module).  ``locking_mode=EXCLUSIVE`` says
the same to SQLite, which then keeps its WAL index in process memory and takes no file locks per
transaction.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import filelock
from orc_git.errors import OrcError, StorageError
from orc_git.text import json_safe

from orc_team import protocol
from orc_team.protocol import EVENTS_KEPT, HeadData, Resource
from orc_team.server.store import (
    Announce,
    AnnounceResource,
    ClientInstance,
    Grant,
    KeptEvent,
    LockRecord,
    NewEvent,
    NoSuchResource,
    ProjectMismatch,
    Recorded,
    Release,
    Stream,
    TaskRecord,
    VersionConflict,
    stored_head,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, project_id TEXT, fence INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT '{}', updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS locks (
    task_id TEXT PRIMARY KEY, user TEXT NOT NULL, user_name TEXT, user_email TEXT,
    client TEXT NOT NULL, token INTEGER NOT NULL, ttl INTEGER NOT NULL, acquired_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL, expires_at REAL NOT NULL);
DROP INDEX IF EXISTS locks_by_expiry;
CREATE TABLE IF NOT EXISTS projects (
    project_id TEXT PRIMARY KEY, last_offset INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, project_id TEXT, pos INTEGER,
    data BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_offset ON events (project_id, pos);
CREATE TABLE IF NOT EXISTS heads (task_id TEXT PRIMARY KEY, head TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS resources (
    resource_id TEXT NOT NULL, version INTEGER NOT NULL, content TEXT NOT NULL,
    updated_by TEXT NOT NULL, updated_at REAL NOT NULL, project_id TEXT,
    PRIMARY KEY (resource_id, version)) WITHOUT ROWID;
"""
# locks_by_expiry went when expiry moved to the in-memory mirror: every grant and release paid
# for keeping it.

_SELECT_LOCK = ("SELECT l.task_id, l.user, l.user_name, l.user_email, l.client, l.token, l.ttl, "
                "l.acquired_at, l.heartbeat_at, l.expires_at, t.project_id "
                "FROM locks l LEFT JOIN tasks t USING (task_id)")
_SELECT_TASK = "SELECT task_id, project_id, fence, state FROM tasks WHERE task_id = ?"
_STORE_STATE = "UPDATE tasks SET state = ? WHERE task_id = ?"
_KEEP_EVENT = "INSERT INTO events (event_id, project_id, pos, data) VALUES (?, ?, ?, ?)"
_SAVE_OFFSET = ("INSERT INTO projects (project_id, last_offset, epoch) VALUES (?, ?, ?) "
                "ON CONFLICT (project_id) DO UPDATE SET last_offset = excluded.last_offset, "
                "epoch = COALESCE(projects.epoch, excluded.epoch)")
_SAVE_HEAD = ("INSERT INTO heads (task_id, head) VALUES (?, ?) ON CONFLICT (task_id) "
              "DO UPDATE SET head = excluded.head")
_ENSURE_TASK = ("INSERT INTO tasks (task_id, project_id, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (task_id) DO UPDATE SET "
                "project_id = COALESCE(tasks.project_id, excluded.project_id)")


_SELECT_RESOURCE = ("SELECT resource_id, version, content, updated_by, updated_at, project_id "
                    "FROM resources WHERE resource_id = ?")


def _resource(row: tuple[Any, ...]) -> Resource:
    resource_id, version, content, by, at, project = row
    return Resource(resource_id, int(version), content, by, protocol.iso(at), project)


log = logging.getLogger("orc_team.server")


class StoreInUse(OrcError):
    code = "STORE_IN_USE"


def _lock(row: tuple[Any, ...]) -> LockRecord:
    task_id, user, name, email, client, token, ttl, acquired, beat, expires, project = row
    return LockRecord(task_id, ClientInstance(user, client, name, email), token, ttl, acquired,
                      beat, expires, project)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_STATE = json.JSONDecoder(parse_constant=_no_constant)


def _state(text: str) -> tuple[dict[str, Any], str | None]:
    """A stored state, and what was wrong with it (None: nothing).  Servers before issue 8
    stored what clients sent: a lone surrogate (written by ``json.dumps`` as ``\\ud800``)
    then broke every reply that carried it.  Such text is escaped; a state that is not a JSON
    object (or holds NaN) is dropped.  Either way the row is repaired, once."""
    try:
        state = _STATE.decode(text)
    except (ValueError, RecursionError) as exc:
        return {}, f"not readable JSON ({exc}); dropped"
    if not isinstance(state, dict):
        return {}, "not a JSON object; dropped"
    try:
        json.dumps(state, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json_safe(state), "text that is not UTF-8; shown escaped"
    return state, None


def _dump(state: dict[str, Any]) -> str:
    """Real UTF-8 and strict JSON: text that could not be read back as such (a lone
    surrogate, NaN) fails the write instead of being stored."""
    return json.dumps(state, ensure_ascii=False, allow_nan=False)


def _by_task(locks: Iterable[LockRecord]) -> list[LockRecord]:
    return sorted(locks, key=lambda lock: lock.task_id)


def _new_epoch() -> str:
    return uuid.uuid4().hex


class SQLiteStore:
    def __init__(self, path: str, events_kept: int = EVENTS_KEPT) -> None:
        self.path = path
        self.events_kept = events_kept
        self._trim_every = max(1, events_kept // 10)
        """Old events are dropped every this many new ones per project, not on every insert:
        between trims a project keeps up to ``events_kept + _trim_every`` events."""
        self._lockfile: filelock.FileLock | None = None
        if path != ":memory:":
            self._lockfile = self._claim(path)
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA locking_mode=EXCLUSIVE")  # before WAL: no shared memory
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=2000")
            self.db.executescript(SCHEMA)
            self._migrate()
            self.domain = self._domain()
            rows = self.db.execute(_SELECT_LOCK).fetchall()
        except sqlite3.Error as exc:
            self._unclaim()
            raise StorageError(f"cannot open the store {path}: {exc}") from None
        self._locks: dict[str, LockRecord] = {row[0]: _lock(row) for row in rows}
        self._heads: dict[str, HeadData] = self._load_heads()
        self._tasks: dict[str, tuple[int, str | None]] = {}  # fence, project: read once, lazily
        self._offsets: dict[str, int] = {}
        self._epochs: dict[str, str] = {}
        self._saved_epochs: set[str] = set()  # projects whose epoch is committed
        self._dirty: set[str] = set()  # projects whose offset this transaction moved
        self._unkept: dict[str | None, int] = {}  # events kept since the last trim

    def _migrate(self) -> None:
        """Stores made before event replay have no epoch column: their projects get an epoch
        when next used (their earlier events were never kept, so replay says truncated)."""
        columns = [row[1] for row in self.db.execute("PRAGMA table_info(projects)")]
        if "epoch" not in columns:
            self.db.execute("ALTER TABLE projects ADD COLUMN epoch TEXT")

    def _domain(self) -> str:
        """The store's lock domain id, made when the store is (a store made before lock domains
        gets one on its next start: its tokens were never recorded with a domain)."""
        self.db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('lock_domain', ?)",
                        (os.urandom(16).hex(),))
        return str(self.db.execute("SELECT value FROM meta WHERE key = 'lock_domain'")
                   .fetchone()[0])

    @staticmethod
    def _claim(path: str) -> filelock.FileLock:
        """Take the store's single-writer lock, or refuse at once.  Not thread-local (the store
        is closed from whichever thread stops the server) and no soft fallback: a soft lock
        file outlives a killed server and would keep the store shut after a ``kill -9``."""
        lock = filelock.FileLock(path + ".lock", timeout=0, mode=0o600, thread_local=False,
                                 fallback_to_soft=False)
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            lock.acquire()
        except filelock.Timeout:  # a TimeoutError, so an OSError: caught first
            raise StoreInUse(f"the store {path} is in use by another orc team server") from None
        except OSError as exc:
            raise StorageError(f"cannot open the store {path}: {exc.strerror or exc}") from None
        return lock

    def _unclaim(self) -> None:
        if self._lockfile is not None:
            self._lockfile.release()
            self._lockfile = None

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction.  Should it fail, the counters are forgotten and read again from
        what was committed; the lock mirror is only ever changed after a commit."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            for project in self._dirty:  # once per project, however many offsets it took
                self.db.execute(_SAVE_OFFSET, (project, self._offsets[project],
                                               self._epochs[project]))
            self.db.execute("COMMIT")
            self._saved_epochs.update(self._dirty)
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            self._tasks.clear()
            self._offsets.clear()
            self._epochs.clear()
            raise
        finally:
            self._dirty.clear()

    def _task_counters(self, task_id: str) -> tuple[int, str | None]:
        known = self._tasks.get(task_id)
        if known is None:
            row = self.db.execute("SELECT fence, project_id FROM tasks WHERE task_id = ?",
                                  (task_id,)).fetchone()
            known = self._tasks[task_id] = (row[0], row[1]) if row else (0, None)
        return known

    def _take_offset(self, project_id: str) -> int:
        """The project's next offset, written when the transaction commits (inside ``_tx``)."""
        offset = self._read_offset(project_id) + 1
        self._offsets[project_id] = offset
        self._dirty.add(project_id)
        return offset

    def _read_offset(self, project_id: str) -> int:
        """The last offset (and the epoch, made here when the project has none yet)."""
        offset = self._offsets.get(project_id)
        if offset is None:
            row = self.db.execute("SELECT last_offset, epoch FROM projects WHERE project_id = ?",
                                  (project_id,)).fetchone()
            offset = self._offsets[project_id] = int(row[0]) if row else 0
            if row and row[1]:
                self._epochs[project_id] = row[1]
                self._saved_epochs.add(project_id)
            else:
                self._epochs[project_id] = _new_epoch()
        return offset

    def _keep(self, db: sqlite3.Connection, event_id: str, project_id: str | None,
              offset: int | None, data: bytes) -> None:
        db.execute(_KEEP_EVENT, (event_id, project_id, offset, data))
        unkept = self._unkept[project_id] = self._unkept.get(project_id, 0) + 1
        if unkept < self._trim_every:
            return
        self._unkept[project_id] = 0
        if project_id is None:  # kept for dedupe only: the latest ones by arrival
            db.execute("DELETE FROM events WHERE project_id IS NULL AND seq <= (SELECT seq "
                       "FROM events WHERE project_id IS NULL ORDER BY seq DESC LIMIT 1 "
                       "OFFSET ?)", (self.events_kept,))
        elif offset is not None:
            db.execute("DELETE FROM events WHERE project_id = ? AND pos <= ?",
                       (project_id, offset - self.events_kept))

    def _learn_project(self, task_id: str, project_id: str | None) -> None:
        """A task's project is set once, by the first message that names one."""
        known = self._tasks.get(task_id)
        if known is not None and known[1] is None and project_id is not None:
            self._tasks[task_id] = (known[0], project_id)
        lock = self._locks.get(task_id)
        if lock is not None and lock.project_id is None and project_id is not None:
            self._locks[task_id] = replace(lock, project_id=project_id)

    def _live(self, task_id: str, now: float) -> tuple[LockRecord | None, LockRecord | None]:
        """(the live lease, or an expired one still on record)."""
        current = self._locks.get(task_id)
        if current is not None and current.expires_at <= now:
            return None, current
        return current, None

    async def acquire(self, task_id: str, holder: ClientInstance, ttl: int, now: float, *,
                      steal: bool = False, project_id: str | None = None,
                      announce: Announce | None = None) -> Grant:
        current, expired = self._live(task_id, now)
        if current is None or (steal and not current.held_by(holder)):
            return self._grant(task_id, holder, ttl, now, project_id, expired, current, announce)
        if project_id is not None and current.project_id is None:
            self.db.execute(_ENSURE_TASK, (task_id, project_id, now))
            self._learn_project(task_id, project_id)
            current = self._locks[task_id]
        if not current.held_by(holder):
            return Grant("held", current, last_head=self._heads.get(task_id))
        self.db.execute("UPDATE locks SET ttl = ?, heartbeat_at = ?, expires_at = ?, "
                        "user_name = ?, user_email = ? WHERE task_id = ?",
                        (ttl, now, now + ttl, holder.name, holder.email, task_id))
        extended = self._locks[task_id] = replace(current, holder=holder, ttl=ttl,
                                                   heartbeat_at=now, expires_at=now + ttl)
        return Grant("extended", extended, last_head=self._heads.get(task_id))

    def _grant(self, task_id: str, holder: ClientInstance, ttl: int, now: float,
               project_id: str | None, expired: LockRecord | None, stolen: LockRecord | None,
               announce: Announce | None) -> Grant:
        """The next fencing token, the lease (replacing a stale or stolen one), the offsets of
        its announcement and of the expired lease's, and those announcements: one
        transaction."""
        fence, project = self._task_counters(task_id)
        project = project or project_id
        token = fence + 1
        lock = LockRecord(task_id, holder, token, ttl, now, now, now + ttl, project)
        with self._tx() as db:
            db.execute("INSERT INTO tasks (task_id, project_id, fence, updated_at) "
                       "VALUES (?, ?, ?, ?) ON CONFLICT (task_id) DO UPDATE SET "
                       "fence = excluded.fence, project_id = excluded.project_id",
                       (task_id, project, token, now))
            db.execute("INSERT OR REPLACE INTO locks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (task_id, holder.user, holder.name, holder.email, holder.client, token,
                        ttl, now, now, now + ttl))
            before = (self._take_offset(project)
                      if project and expired is not None and expired.project_id else None)
            offset = self._take_offset(project) if project else None
            grant = Grant("stolen" if stolen else "acquired", lock, expired, stolen, offset,
                          before, self._heads.get(task_id))
            self._keep_all(db, announce(grant) if announce else ())
        self._tasks[task_id] = (token, project)
        self._locks[task_id] = lock
        return grant

    def _keep_all(self, db: sqlite3.Connection, events: Iterable[KeptEvent]) -> None:
        for event in events:
            if event.project_id is not None and event.offset is not None:
                self._keep(db, event.event_id, event.project_id, event.offset, event.data)

    async def release(self, task_id: str, holder: ClientInstance | None, now: float, *,
                      head: HeadData | None = None, announce: Announce | None = None
                      ) -> Release:
        current, expired = self._live(task_id, now)
        if expired is not None:
            self._delete(task_id)
            return Release(False, None, expired=expired)
        if current is None:
            return Release(False, None)
        if holder is not None and not current.held_by(holder):
            return Release(False, current)
        last_head = head or self._heads.get(task_id)
        if current.project_id is None and head is None:
            self._delete(task_id)
            done = Release(True, current, last_head=last_head)
            if announce is not None:
                announce(done)  # nothing to keep without a project
            return done
        with self._tx() as db:
            db.execute("DELETE FROM locks WHERE task_id = ?", (task_id,))
            if head is not None:
                db.execute(_SAVE_HEAD, (task_id, json.dumps(head)))
            offset = self._take_offset(current.project_id) if current.project_id else None
            done = Release(True, current, offset=offset, last_head=last_head)
            self._keep_all(db, announce(done) if announce else ())
        del self._locks[task_id]
        if head is not None:
            self._heads[task_id] = head
        return done

    def _load_heads(self) -> dict[str, HeadData]:
        heads: dict[str, HeadData] = {}
        for task_id, text in self.db.execute("SELECT task_id, head FROM heads"):
            head = stored_head(text)
            if head is not None:
                heads[task_id] = head
        return heads

    async def last_head(self, task_id: str) -> HeadData | None:
        return self._heads.get(task_id)

    def _delete(self, task_id: str) -> None:
        """One statement: its own transaction, committed when ``execute`` returns."""
        self.db.execute("DELETE FROM locks WHERE task_id = ?", (task_id,))
        del self._locks[task_id]

    async def get_lock(self, task_id: str, now: float) -> LockRecord | None:
        return self._live(task_id, now)[0]

    async def list_locks(self, now: float) -> list[LockRecord]:
        return _by_task(lock for lock in self._locks.values() if lock.expires_at > now)

    async def expire(self, now: float) -> list[LockRecord]:
        expired = _by_task(lock for lock in self._locks.values() if lock.expires_at <= now)
        if expired:
            self.db.execute("DELETE FROM locks WHERE expires_at <= ?", (now,))
            for lock in expired:
                del self._locks[lock.task_id]
        return expired

    def _task(self, row: tuple[Any, ...]) -> TaskRecord:
        task_id, project_id, fence, text = row
        state, problem = _state(text)
        if problem is not None:
            log.warning("%s: its stored state was %s (left by an older server)", task_id,
                        problem)
            self.db.execute(_STORE_STATE, (_dump(state), task_id))  # its own transaction
        return TaskRecord(task_id, project_id, state, fence)

    async def get_task(self, task_id: str) -> TaskRecord | None:
        row = self.db.execute(_SELECT_TASK, (task_id,)).fetchone()
        return self._task(row) if row else None

    async def project_tasks(self, project_id: str) -> list[TaskRecord]:
        rows = self.db.execute("SELECT task_id, project_id, fence, state FROM tasks "
                               "WHERE project_id = ? ORDER BY task_id", (project_id,)).fetchall()
        return [self._task(row) for row in rows]

    async def record_events(self, events: Sequence[NewEvent]
                            ) -> list[Recorded | ProjectMismatch]:
        results: list[Recorded | ProjectMismatch] = []
        now = time.time()
        with self._tx() as db:
            for event in events:
                results.append(self._record(db, event, now))
        for event, result in zip(events, results, strict=True):
            if isinstance(result, Recorded) and not result.duplicate:
                self._learn_project(event.task_id, result.project_id)
        return results

    def _record(self, db: sqlite3.Connection, event: NewEvent, now: float
                ) -> Recorded | ProjectMismatch:
        known = self._known(db, [event.event_id])
        if known:
            return known[event.event_id]
        row = db.execute(_SELECT_TASK, (event.task_id,)).fetchone()
        if row is None:
            project = event.project_id
            db.execute("INSERT INTO tasks (task_id, project_id, state, updated_at) "
                       "VALUES (?, ?, ?, ?)", (event.task_id, project, _dump(event.state), now))
        else:
            task = self._task(row)
            project = task.project_id or event.project_id
            if event.project_id is not None and project != event.project_id:
                return ProjectMismatch(event.task_id, project)
            if event.state or project != task.project_id:
                task.state.update(event.state)
                db.execute("UPDATE tasks SET project_id = ?, state = ? WHERE task_id = ?",
                           (project, _dump(task.state), event.task_id))
        offset = self._take_offset(project) if project else None
        data = protocol.encode({**event.data, "project_id": project, "offset": offset})
        self._keep(db, event.event_id, project, offset, data)
        return Recorded(event.event_id, project, offset,
                        self._epochs[project] if project else None, data)

    def _known(self, db: sqlite3.Connection, event_ids: Sequence[str]) -> dict[str, Recorded]:
        marks = ",".join("?" * len(event_ids))
        rows = db.execute(f"SELECT event_id, project_id, pos, data FROM events "
                          f"WHERE event_id IN ({marks})", tuple(event_ids)).fetchall()
        found: dict[str, Recorded] = {}
        for event_id, project, offset, data in rows:
            stored = json.loads(data)
            epoch = None
            if project is not None:
                self._read_offset(project)
                epoch = self._epochs[project]
            found[event_id] = Recorded(event_id, project, offset, epoch, bytes(data),
                                       duplicate=True, stored=stored)
        return found

    async def find_events(self, event_ids: Sequence[str]) -> dict[str, Recorded]:
        found: dict[str, Recorded] = {}
        ids = list(dict.fromkeys(event_ids))
        for start in range(0, len(ids), 500):  # under SQLite's limit on bound parameters
            found.update(self._known(self.db, ids[start:start + 500]))
        return found

    async def keep_event(self, project_id: str, build: Callable[[int], KeptEvent]
                         ) -> KeptEvent:
        with self._tx() as db:
            event = build(self._take_offset(project_id))
            self._keep_all(db, [event])
        return event

    async def events(self, project_id: str, after: int | None, limit: int
                     ) -> list[tuple[int, bytes]]:
        if after is None:
            rows = self.db.execute("SELECT pos, data FROM events WHERE project_id = ? "
                                   "ORDER BY pos DESC LIMIT ?", (project_id, limit)).fetchall()
            rows.reverse()
        else:
            rows = self.db.execute("SELECT pos, data FROM events WHERE project_id = ? AND "
                                   "pos > ? ORDER BY pos LIMIT ?",
                                   (project_id, after, limit)).fetchall()
        return [(int(pos), bytes(data)) for pos, data in rows]

    async def stream(self, project_id: str) -> Stream:
        last = self._read_offset(project_id)
        epoch = self._epochs[project_id]
        if project_id not in self._saved_epochs:  # given out: kept from now on
            self.db.execute(_SAVE_OFFSET, (project_id, last, epoch))
            self._saved_epochs.add(project_id)
        row = self.db.execute("SELECT MIN(pos) FROM events WHERE project_id = ?",
                              (project_id,)).fetchone()
        return Stream(epoch, last, last + 1 if row[0] is None else int(row[0]))

    async def projects(self) -> list[str]:
        rows = self.db.execute("SELECT project_id FROM projects ORDER BY project_id").fetchall()
        return [row[0] for row in rows]

    async def next_offset(self, project_id: str) -> int:
        with self._tx():
            return self._take_offset(project_id)

    async def last_offset(self, project_id: str) -> int:
        return self._read_offset(project_id)

    async def get_resource(self, resource_id: str, version: int | None = None
                           ) -> Resource | None:
        if version is None:
            row = self.db.execute(_SELECT_RESOURCE + " ORDER BY version DESC LIMIT 1",
                                  (resource_id,)).fetchone()
        else:
            row = self.db.execute(_SELECT_RESOURCE + " AND version = ?",
                                  (resource_id, version)).fetchone()
        return _resource(row) if row else None

    async def list_resources(self) -> list[Resource]:
        rows = self.db.execute(
            "SELECT resource_id, MAX(version), NULL, updated_by, updated_at, project_id "
            "FROM resources GROUP BY resource_id ORDER BY resource_id").fetchall()
        return [_resource(row) for row in rows]  # SQLite: the other columns are MAX's row

    async def put_resource(self, resource_id: str, content: str, expected_version: int,
                           updated_by: str, now: float, *, project_id: str | None = None,
                           announce: AnnounceResource | None = None
                           ) -> tuple[Resource, KeptEvent | None]:
        with self._tx() as db:
            row = db.execute(_SELECT_RESOURCE + " ORDER BY version DESC LIMIT 1",
                             (resource_id,)).fetchone()
            current = _resource(row) if row else None
            if current is None and expected_version > 0:
                raise NoSuchResource(resource_id)
            if current is not None and current.version != expected_version:
                raise VersionConflict(current, expected_version)
            project = project_id or (current.project_id if current else None)
            made = Resource(resource_id, expected_version + 1, content, updated_by,
                            protocol.iso(now), project)
            db.execute("INSERT INTO resources VALUES (?, ?, ?, ?, ?, ?)",
                       (resource_id, made.version, content, updated_by, now, project))
            event = None
            if announce is not None:
                event = announce(made, self._take_offset(project) if project else None)
                self._keep_all(db, [event])
        return made, event

    async def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        self._unclaim()
