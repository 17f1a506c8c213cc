"""In-process checks of the parts whose failures a real client cannot provoke: the store's
decisions and persistence, INTERNAL errors, the one-reply rule when a handler fails late."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from orc_team import protocol
from orc_team.server.config import ServerConfig
from orc_team.server.dispatch import Dispatcher
from orc_team.server.events import EventBus
from orc_team.server.hub import Hub
from orc_team.server.locks import LockService
from orc_team.server.presence import Presence
from orc_team.server.ratelimit import TokenBucket
from orc_team.server.replay import start_after
from orc_team.server.sqlite_store import SQLiteStore, StoreInUse
from orc_team.server.store import ClientInstance, NewEvent, Recorded
from orc_team.tokens import Claims

from conftest import unique

ALICE = ClientInstance("alice", "laptop", "Alice", None)
ALICE_DESKTOP = ClientInstance("alice", "desktop", "Alice", None)
BOB = ClientInstance("bob", "b1", "Bob", None)


async def record(store: SQLiteStore, task_id: str, project_id: str | None,
                 state: dict[str, Any]) -> int | None:
    """One published event, as the event bus hands it to the store; its offset."""
    event_id = unique("ev")
    [kept] = await store.record_events([NewEvent(event_id, task_id, project_id, state,
                                                 {"event_id": event_id})])
    assert isinstance(kept, Recorded), kept
    return kept.offset


async def test_store_persists_and_is_exclusive(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite3")
    store = SQLiteStore(path)
    await store.acquire("T-1", ALICE, 60, 1000.0)
    offset = await record(store, "T-1", "acme", {"status": "running"})
    task = await store.get_task("T-1")
    assert offset == 1 and task is not None and task.state == {"status": "running"}
    with pytest.raises(StoreInUse):
        SQLiteStore(path)
    await store.close()
    reopened = SQLiteStore(path)
    lock = await reopened.get_lock("T-1", 1001.0)
    assert lock is not None and lock.holder == ALICE and lock.token == 1
    assert (await reopened.acquire("T-1", BOB, 60, 1002.0)).outcome == "held"
    regrant = await reopened.acquire("T-1", BOB, 60, 2000.0)
    # The grant takes the project's next offsets (for announcing the expired lease, then the
    # grant) in its own transaction: subscribers see them in that order.
    assert (regrant.lock.token, regrant.lock.project_id, regrant.offset) == (2, "acme", 3)
    assert regrant.expired is not None and regrant.expired_offset == 2
    assert await reopened.next_offset("acme") == 4
    task2 = await reopened.get_task("T-1")
    assert task2 is not None and task2.state == {"status": "running"}
    await reopened.close()


async def test_decisions_from_memory_match_what_was_committed(tmp_path: Path) -> None:
    """The store decides from its mirror of the lock table; a reopened store reads SQLite.  After
    every kind of change the two must agree, and the counters must carry on."""
    path = str(tmp_path / "s.sqlite3")
    store = SQLiteStore(path)
    await store.acquire("T-1", ALICE, 60, 1000.0)
    await record(store, "T-1", "acme", {})  # T-1 learns its project while locked
    await store.acquire("T-2", BOB, 60, 1000.0, project_id="acme")
    bob = ClientInstance("bob", "b1", "Robert", "b@x")
    await store.acquire("T-2", bob, 90, 1001.0)  # extended
    await store.acquire("T-3", ALICE, 5, 1000.0)
    await store.acquire("T-3", BOB, 60, 1010.0)  # the expired lease is replaced
    await store.acquire("T-4", ALICE, 60, 1000.0)
    assert (await store.release("T-4", ALICE, 1001.0)).released
    await store.acquire("T-5", ALICE, 1, 1000.0)
    assert [lock.task_id for lock in await store.expire(1002.0)] == ["T-5"]
    stolen = await store.acquire("T-1", BOB, 60, 1003.0, steal=True)
    assert stolen.outcome == "stolen" and stolen.lock.project_id == "acme"
    locks, offset = await store.list_locks(1004.0), await store.last_offset("acme")
    assert [(lock.task_id, lock.token) for lock in locks] == [("T-1", 2), ("T-2", 1), ("T-3", 2)]
    assert locks[1].holder.name == "Robert" and locks[1].expires_at == 1091.0
    await store.close()
    reopened = SQLiteStore(path)
    assert await reopened.list_locks(1004.0) == locks
    assert await reopened.last_offset("acme") == offset
    for task, token in (("T-4", 2), ("T-5", 2)):
        assert (await reopened.acquire(task, BOB, 60, 1005.0)).lock.token == token
    await reopened.close()


class FakeConn:
    """Just what the dispatcher touches of a connection."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.claims = Claims("alice", "Alice", None, "member", 2e9)
        self.holder = ALICE
        self.user = "alice"
        self.id = 1
        self.closing = False
        self.tasks: set[str] = set()
        self.projects: set[str] = set()
        self.general = self.control = TokenBucket(100, 100)
        self.strikes = TokenBucket(100, 100)

    def send(self, message: dict[str, Any]) -> bool:
        self.sent.append(message)
        return True

    def send_bytes(self, data: bytes) -> bool:
        return self.send(json.loads(data))


async def test_a_store_from_before_replay_gets_epochs_and_says_truncated(
        tmp_path: Path) -> None:
    """Projects of a store made before events were kept: their offsets go on, they get an
    epoch (kept from then on), and a replay from 0 is truncated (those events were never
    kept)."""
    path = str(tmp_path / "old.sqlite3")
    old = sqlite3.connect(path)
    old.executescript("CREATE TABLE projects (project_id TEXT PRIMARY KEY, "
                      "last_offset INTEGER NOT NULL DEFAULT 0);"
                      "INSERT INTO projects VALUES ('acme', 41);")
    old.commit()
    old.close()
    store = SQLiteStore(path)
    stream = await store.stream("acme")
    assert (stream.last_offset, stream.oldest_offset) == (41, 42) and stream.epoch
    assert start_after(stream, 0, None) == (41, True)
    assert await record(store, "T-1", "acme", {}) == 42
    await store.close()
    reopened = SQLiteStore(path)
    again = await reopened.stream("acme")
    assert (again.epoch, again.last_offset, again.oldest_offset) == (stream.epoch, 42, 42)
    assert [offset for offset, _ in await reopened.events("acme", 0, 10)] == [42]
    assert start_after(again, 41, stream.epoch) == (41, False)
    assert start_after(again, 41, "another") == (41, True)
    assert start_after(again, 43, None) == (41, True)  # beyond the end: another stream's
    await reopened.close()


def dispatcher(store: Any, bus: type[EventBus] = EventBus) -> Dispatcher:
    config = ServerConfig(secret="x" * 32, store=":memory:")
    hub = Hub(10)
    events = bus(hub, store)
    return Dispatcher(config, store, hub, events, LockService(store, events, hub),
                      Presence(hub, 300))


async def test_an_unexpected_failure_is_internal_and_answered_once(
        caplog: pytest.LogCaptureFixture) -> None:
    class Broken(SQLiteStore):
        async def get_task(self, task_id: str) -> Any:
            raise RuntimeError("disk on fire")

    class BrokenBus(EventBus):
        def send(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("fan-out on fire")

    d = dispatcher(Broken(":memory:"), BrokenBus)
    conn = FakeConn()
    await d.handle(conn, b'{"type": "subscribe", "id": "s", "data": {"task_id": "T-1"}}')  # type: ignore[arg-type]
    assert conn.sent == [protocol.error("s", "INTERNAL", "internal server error")]
    conn.sent.clear()
    caplog.clear()
    # The lock is granted and answered; announcing it then fails: still one reply.
    await d.handle(conn, b'{"type": "lock", "id": "l", "data": {"task_id": "T-2", '  # type: ignore[arg-type]
                         b'"project_id": "acme"}}')
    assert [m["type"] for m in conn.sent if m.get("id") == "l"] == ["lock_result"]
    assert "failed to handle a message" in caplog.text


def test_token_bucket_refills() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 0.5
    assert bucket.take() and not bucket.take()


def test_iso_has_milliseconds() -> None:
    assert protocol.iso(0.25) == "1970-01-01T00:00:00.250Z"
    assert protocol.iso(59.9999) == "1970-01-01T00:00:59.999Z"


async def test_a_store_keeps_one_lock_domain_and_another_store_has_its_own(
        tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite3")
    store = SQLiteStore(path)
    domain = store.domain
    assert len(domain) == 32 and int(domain, 16) >= 0
    await store.close()
    reopened = SQLiteStore(path)
    assert reopened.domain == domain  # across restarts: its tokens go on counting in it
    other = SQLiteStore(str(tmp_path / "other.sqlite3"))
    assert other.domain != domain
    await reopened.close()
    await other.close()


def test_a_renewal_answered_from_another_store_counts_its_tokens_afresh() -> None:
    """Token old+1 means "nobody had it meanwhile" only within one store's count."""
    from orc_git.locking.info import LockInfo

    from orc_team.client.renewal import Held, judge

    def answer(token: int, domain: str) -> dict[str, Any]:
        return {"acquired": True, "extended": False, "task_id": "T", "owner": "alice",
                "client": "c", "token": token, "ttl": 60, "lock_domain": domain}

    a, b = "a" * 32, "b" * 32
    assert judge("T", Held(LockInfo("T", token=1, lock_domain=a), 60), answer(2, a)) == (
        None, False)  # the same store: expired, nobody had it, renewed
    lost, give_back = judge("T", Held(LockInfo("T", token=1, lock_domain=a), 60), answer(2, b))
    assert give_back and lost is not None and "another holder" in lost
    held = Held(LockInfo("T", token=5, lock_domain=a), 60)
    assert judge("T", held, answer(1, b)) == (None, False)  # the new store's first grant
    assert (held.token, held.info.lock_domain) == (1, b)
