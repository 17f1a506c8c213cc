"""One store test suite, run against both stores: the SQLite file and a real redis-server.

What the server relies on from :class:`orc_team.server.store.Store`: lock decisions, fencing
tokens (the next grant is the previous token + 1 within one store), expiry claimed once, events
kept with offsets and deduplicated by id, replay by offset, streams with epochs, resources with
compare-and-set, and what survives reopening the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from orc_team import protocol
from orc_team.server.redis_store import RedisStore
from orc_team.server.sqlite_store import SQLiteStore
from orc_team.server.store import (
    ClientInstance,
    Grant,
    KeptEvent,
    NewEvent,
    NoSuchResource,
    ProjectMismatch,
    Recorded,
    Store,
    VersionConflict,
)

from conftest import RedisProc, unique

ALICE = ClientInstance("alice", "laptop", "Alice", None)
ALICE_DESKTOP = ClientInstance("alice", "desktop", "Alice", None)
BOB = ClientInstance("bob", "b1", "Bob", "bob@example.com")

Opener = Callable[[], Store]


@pytest.fixture(params=["sqlite", "redis"])
async def opener(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens the store under test (again: the same data, as after a server restart)."""
    opened: list[Store] = []
    if request.param == "redis":
        redis_server: RedisProc = request.getfixturevalue("redis_server")
        redis_server.flush()

        def open_store() -> Store:
            opened.append(RedisStore(redis_server.url, events_kept=20))
            return opened[-1]
    else:
        path = str(tmp_path / "s.sqlite3")

        def open_store() -> Store:
            opened.append(SQLiteStore(path, events_kept=20))
            return opened[-1]

    yield open_store
    for store in opened:
        await store.close()


@pytest.fixture
async def store(opener: Opener) -> Store:
    return opener()


async def record(store: Store, task_id: str, project_id: str | None,
                 state: dict[str, Any] | None = None, event_id: str | None = None
                 ) -> Recorded:
    event_id = event_id or unique("ev")
    [kept] = await store.record_events([NewEvent(
        event_id, task_id, project_id, state or {},
        {"event_id": event_id, "event_type": "task.progress", "task_id": task_id,
         "project_id": None, "user": "alice", "user_name": "Alice \"A\" ü", "made_at": None,
         "timestamp": "2026-01-01T00:00:00.000Z", "offset": None, "holder": False,
         "payload": {"offset": None, "text": '"offset":-1'}})])
    assert isinstance(kept, Recorded), kept
    return kept


async def test_lock_decisions(store: Store) -> None:
    grant = await store.acquire("T-1", ALICE, 10, 100.0, project_id="acme")
    assert (grant.outcome, grant.lock.project_id) == ("acquired", "acme")
    first = grant.lock.token
    extended = await store.acquire("T-1", ALICE, 20, 105.0)
    assert extended.outcome == "extended" and extended.lock.token == first
    refused = await store.acquire("T-1", ALICE_DESKTOP, 10, 106.0)
    assert refused.outcome == "held" and refused.lock.expires_at == 125.0
    assert refused.lock.holder == ALICE
    stolen = await store.acquire("T-1", BOB, 10, 107.0, steal=True)
    assert stolen.outcome == "stolen" and stolen.stolen is not None
    assert stolen.stolen.holder == ALICE and stolen.lock.token == first + 1
    assert (await store.release("T-1", ALICE, 108.0)).released is False
    after_expiry = await store.acquire("T-1", ALICE, 10, 200.0)
    assert after_expiry.outcome == "acquired" and after_expiry.expired is not None
    assert after_expiry.expired.holder == BOB and after_expiry.lock.token == first + 2
    lock = await store.get_lock("T-1", 201.0)
    assert lock is not None and lock.holder == ALICE and lock.project_id == "acme"
    assert [lock.task_id for lock in await store.expire(300.0)] == ["T-1"]
    assert await store.expire(300.0) == []  # claimed once
    assert await store.list_locks(300.0) == []
    assert await store.get_lock("T-1", 300.0) is None


async def test_release(store: Store) -> None:
    grant = await store.acquire("T-2", BOB, 60, 1000.0)
    other = await store.release("T-2", ALICE, 1001.0)
    assert not other.released and other.lock is not None and other.lock.holder == BOB
    done = await store.release("T-2", BOB, 1002.0)
    assert done.released and done.lock is not None and done.lock.token == grant.lock.token
    assert (await store.release("T-2", BOB, 1003.0)) == (await store.release("T-2", None, 1003))
    await store.acquire("T-2", BOB, 5, 1004.0)
    forced = await store.release("T-2", None, 1005.0)
    assert forced.released
    await store.acquire("T-2", BOB, 5, 1006.0)
    late = await store.release("T-2", BOB, 2000.0)
    assert not late.released and late.lock is None and late.expired is not None


async def test_announcements_are_kept_with_the_change_in_offset_order(store: Store) -> None:
    """A grant's announcements take the project's next offsets (the expired lease's, then the
    grant's) and are kept with it; the events sent are the ones kept."""
    seen: list[Grant] = []

    def announce(grant: Any) -> list[KeptEvent]:
        seen.append(grant)
        events = []
        if getattr(grant, "expired", None) is not None:
            events.append(KeptEvent(grant.lock.project_id, grant.expired_offset,
                                    {"event_type": "lock.expired", "offset":
                                     grant.expired_offset}))
        events.append(KeptEvent(grant.lock.project_id, grant.offset,
                                {"event_type": "lock.acquired", "offset": grant.offset}))
        return events

    project = unique("proj")
    await store.acquire("T-3", ALICE, 5, 100.0, project_id=project, announce=announce)
    grant = await store.acquire("T-3", BOB, 5, 200.0, announce=announce)
    assert grant.expired is not None and (grant.expired_offset, grant.offset) == (2, 3)
    kept = await store.events(project, 0, 10)
    assert [offset for offset, _ in kept] == [1, 2, 3]
    assert [protocol.decode(data)["event_type"] for _, data in kept] == [
        "lock.acquired", "lock.expired", "lock.acquired"]
    assert all(protocol.decode(data)["offset"] == offset for offset, data in kept)
    released: list[KeptEvent] = []

    def on_release(done: Any) -> list[KeptEvent]:
        released.clear()
        released.append(KeptEvent(project, done.offset, {"event_type": "lock.released",
                                                          "offset": done.offset}))
        return released

    done = await store.release("T-3", BOB, 201.0, announce=on_release)
    assert done.offset == 4 and released[0].offset == 4
    assert protocol.decode(released[0].data)["offset"] == 4
    assert (await store.events(project, 3, 10))[0][1] == released[0].data

    def build(offset: int) -> KeptEvent:
        return KeptEvent(project, offset, {"event_type": "lock.expired", "offset": offset})

    event = await store.keep_event(project, build)
    assert event.offset == 5 and (await store.events(project, 4, 1)) == [(5, event.data)]


async def test_events_offsets_state_and_dedupe(store: Store) -> None:
    project = unique("proj")
    first = await record(store, "T-4", project, {"status": "running"})
    assert (first.offset, first.project_id, first.duplicate) == (1, project, False)
    stamped = protocol.decode(first.data)
    assert stamped["offset"] == 1 and stamped["project_id"] == project
    assert stamped["payload"] == {"offset": None, "text": '"offset":-1'}
    assert stamped["user_name"] == 'Alice "A" ü'
    again = await record(store, "T-4", None, {"phase": "x"}, event_id=first.event_id)
    assert again.duplicate and again.offset == 1 and again.data == first.data
    assert again.stored is not None and again.stored["offset"] == 1
    second = await record(store, "T-4", None, {"phase": "build", "iteration": 2**50})
    assert second.offset == 2 and second.project_id == project  # the task's own project
    task = await store.get_task("T-4")
    assert task is not None and task.project_id == project
    assert task.state == {"status": "running", "phase": "build", "iteration": 2**50}
    [mismatch] = await store.record_events([NewEvent(
        "ev-x-" + project, "T-4", "other", {}, {"event_id": "x", "project_id": None,
                                                "offset": None})])
    assert isinstance(mismatch, ProjectMismatch) and mismatch.project_id == project
    found = await store.find_events([first.event_id, "nope-" + project])
    assert list(found) == [first.event_id] and found[first.event_id].duplicate
    assert [t.task_id for t in await store.project_tasks(project)] == ["T-4"]
    assert await store.get_task("T-never") is None
    loose = await record(store, "T-5", None)
    assert loose.offset is None and loose.project_id is None
    assert (await record(store, "T-5", None, event_id=loose.event_id)).duplicate
    assert await store.last_offset(project) == 2


async def test_batch_is_kept_in_order_and_a_duplicate_within_it_once(store: Store) -> None:
    project = unique("proj")
    ids = [unique("ev") for _ in range(3)]
    batch = [NewEvent(i, "T-6", project, {}, {"event_id": i, "project_id": None,
                                              "offset": None}) for i in [*ids, ids[0]]]
    results = await store.record_events(batch)
    assert [(r.offset, r.duplicate) for r in results if isinstance(r, Recorded)] == [
        (1, False), (2, False), (3, False), (1, True)]


async def test_replay_streams_and_trimming(store: Store) -> None:
    project = unique("proj")
    stream = await store.stream(project)
    assert (stream.last_offset, stream.oldest_offset) == (0, 1) and stream.epoch
    for _ in range(30):
        await record(store, "T-7", project)
    after = await store.stream(project)
    assert after.epoch == stream.epoch and after.last_offset == 30
    assert after.oldest_offset <= 30 - 20 + 1  # at least events_kept are kept
    assert [o for o, _ in await store.events(project, 25, 3)] == [26, 27, 28]
    assert [o for o, _ in await store.events(project, None, 3)] == [28, 29, 30]
    assert await store.events(project, 30, 5) == []
    assert await store.next_offset(project) == 31


async def test_resources_compare_and_set(store: Store) -> None:
    rid = unique("res")
    made: list[tuple[Any, int | None]] = []

    def announce(resource: Any, offset: int | None) -> KeptEvent:
        made.append((resource, offset))
        return KeptEvent(resource.project_id, offset, {"event_type": "resource.updated",
                                                       "offset": offset})

    project = unique("proj")
    with pytest.raises(NoSuchResource):
        await store.put_resource(rid, "x", 3, "alice", 10.0)
    v1, e1 = await store.put_resource(rid, "one", 0, "alice", 10.0, project_id=project,
                                      announce=announce)
    assert (v1.version, v1.project_id, e1 and e1.offset) == (1, project, 1)
    assert e1 is not None and protocol.decode(e1.data)["offset"] == 1
    with pytest.raises(VersionConflict) as conflict:
        await store.put_resource(rid, "again", 0, "bob", 11.0)
    assert conflict.value.current.content == "one" and conflict.value.current.version == 1
    v2, e2 = await store.put_resource(rid, "two ü", 1, "bob", 12.0, announce=announce)
    assert (v2.version, v2.project_id, e2 and e2.offset) == (2, project, 2)
    with pytest.raises(VersionConflict):
        await store.put_resource(rid, "stale", 1, "alice", 13.0)
    latest = await store.get_resource(rid)
    assert latest is not None and (latest.content, latest.updated_by) == ("two ü", "bob")
    base = await store.get_resource(rid, 1)
    assert base is not None and base.content == "one"
    assert await store.get_resource(rid, 9) is None
    listed = [r for r in await store.list_resources() if r.resource_id == rid]
    assert [(r.version, r.updated_by) for r in listed] == [(2, "bob")]
    bare = unique("res")
    v, event = await store.put_resource(bare, "b", 0, "bob", 14.0, announce=announce)
    assert v.project_id is None and event is not None and event.offset is None


async def test_reopening_keeps_locks_counters_domain_and_streams(opener: Opener) -> None:
    store = opener()
    project = unique("proj")
    grant = await store.acquire("T-8", ALICE, 60, 1000.0, project_id=project)
    await record(store, "T-8", project, {"status": "running"})
    epoch = (await store.stream(project)).epoch
    last = await store.last_offset(project)
    domain = store.domain
    await store.close()
    reopened = opener()
    assert reopened.domain == domain
    lock = await reopened.get_lock("T-8", 1001.0)
    assert lock is not None and lock.holder == ALICE and lock.token == grant.lock.token
    assert (await reopened.acquire("T-8", BOB, 60, 1002.0)).outcome == "held"
    regrant = await reopened.acquire("T-8", BOB, 60, 2000.0)
    assert regrant.lock.token == grant.lock.token + 1
    assert (await reopened.stream(project)).epoch == epoch
    assert await reopened.last_offset(project) >= last >= 1
    task = await reopened.get_task("T-8")
    assert task is not None and task.state == {"status": "running"}


async def test_a_decision_changed_between_the_two_runs_is_made_again(
        redis_server: RedisProc) -> None:
    """Redis store only: an announced grant decides, builds its events, then applies only if
    the decision still holds.  Here another process removes the expired lease in between (as
    its sweeper would): the grant is decided again and announces no expiry of its own."""
    import redis

    store = RedisStore(redis_server.url)
    project, task = unique("proj"), unique("T")
    await store.acquire(task, ALICE, 5, 100.0, project_id=project)
    seen: list[Any] = []

    def announce(grant: Any) -> list[KeptEvent]:
        seen.append(grant)
        if len(seen) == 1:
            other = redis.Redis(port=redis_server.port)
            other.delete(f"orc:lock:{task}")
            other.zrem("orc:locks", task)
            other.close()
        events = [KeptEvent(project, grant.expired_offset, {"event_type": "lock.expired",
                                                            "offset": grant.expired_offset})
                  ] if grant.expired is not None else []
        return [*events, KeptEvent(project, grant.offset, {"event_type": "lock.acquired",
                                                           "offset": grant.offset})]

    grant = await store.acquire(task, BOB, 5, 200.0, announce=announce)
    assert [g.expired is not None for g in seen] == [True, False]
    assert grant.expired is None and grant.outcome == "acquired"
    kinds = [protocol.decode(data)["event_type"] for _, data in await store.events(project, 0,
                                                                                    10)]
    assert kinds == ["lock.acquired"]
    await store.close()


async def test_every_grant_and_release_is_announced(store: Store) -> None:
    """With or without a project (without one, nothing is kept, but the caller still sends
    its lock.acquired / lock.released to the task's subscribers)."""
    grants: list[Any] = []

    def announce(change: Any) -> list[KeptEvent]:
        grants.append(change)
        return []

    await store.acquire("T-9", ALICE, 5, 100.0, announce=announce)
    await store.acquire("T-9", ALICE, 5, 101.0, announce=announce)  # an extension: not
    await store.release("T-9", ALICE, 102.0, announce=announce)
    await store.acquire("T-9", BOB, 5, 103.0, announce=announce)
    await store.acquire("T-9", ALICE, 5, 104.0, steal=True, announce=announce)
    assert [type(g).__name__ for g in grants] == ["Grant", "Release", "Grant", "Grant"]
    assert grants[-1].stolen is not None and grants[-1].stolen.holder == BOB


@pytest.mark.parametrize("with_project", [False, True])
async def test_a_release_records_its_head_and_every_later_answer_reads_it(
        store: Store, with_project: bool) -> None:
    task, project = unique("T"), unique("proj") if with_project else None
    head: Any = {"commit": "a" * 40, "branch": "origin/main", "by": "alice", "at": "now"}
    newer: Any = {**head, "commit": "b" * 40, "by": "bob"}
    events: list[Any] = []

    def announce(change: Any) -> list[KeptEvent]:
        events.append(change.last_head)
        return []

    first = await store.acquire(task, ALICE, 30, 100.0, project_id=project)
    assert first.granted and first.last_head is None
    refused = await store.release(task, BOB, 101.0, head=newer)  # not Bob's: nothing kept
    assert not refused.released and await store.last_head(task) is None
    done = await store.release(task, ALICE, 102.0, head=head, announce=announce)
    assert done.released and done.last_head == head and events == [head]
    assert (await store.acquire(task, BOB, 30, 103.0, project_id=project)).last_head == head
    assert (await store.acquire(task, ALICE, 30, 104.0)).last_head == head  # refused: says it
    assert (await store.acquire(task, BOB, 30, 105.0)).last_head == head  # extended: says it
    kept = await store.release(task, BOB, 106.0)  # no head: the last one stays
    assert kept.last_head == head and await store.last_head(task) == head
    await store.acquire(task, BOB, 30, 107.0)
    await store.release(task, BOB, 108.0, head=newer, announce=announce)
    assert events[-1] == newer and await store.last_head(task) == newer


async def test_last_head_and_projects_survive_reopening(opener: Opener) -> None:
    store = opener()
    task, project = unique("T"), unique("proj")
    assert await store.last_head(task) is None
    head: Any = {"commit": "a" * 40, "branch": "origin/main", "by": "alice", "at": "now"}
    await store.acquire(task, ALICE, 30, 100.0)
    await store.release(task, ALICE, 101.0, head=head)
    await store.stream(project)
    await store.close()
    reopened = opener()
    assert await reopened.last_head(task) == head
    assert (await reopened.acquire(task, BOB, 30, 102.0)).last_head == head
    assert project in await reopened.projects()
    assert await reopened.projects() == sorted(await reopened.projects())


async def test_a_stored_head_that_is_not_one_reads_as_none(opener: Opener) -> None:
    """Garbage where a head is kept (a hand-edited store, another program's key) is no head:
    the lock answers say none, never an internal error."""
    store = opener()
    task = unique("T")
    await store.acquire(task, ALICE, 30, 100.0)
    head: Any = {"commit": "a" * 40, "branch": None}
    await store.release(task, ALICE, 101.0, head=head)
    if isinstance(store, RedisStore):
        await store.client.set("orc:head:" + task, b"{not json")
    else:
        assert isinstance(store, SQLiteStore)
        store.db.execute("UPDATE heads SET head = '{not json' WHERE task_id = ?", (task,))
        await store.close()
        store = opener()
    assert await store.last_head(task) is None
    assert (await store.acquire(task, BOB, 30, 102.0)).last_head is None
