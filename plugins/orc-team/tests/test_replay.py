"""Stored events: event_id dedupe, the ``events`` batch, offsets and epochs, ``subscribe since``
replay, and ``GET /api/events``.  Real server processes, real WebSocket clients.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from typing import Any

from conftest import WAIT, Client, ServerFactory, ServerProc, token, unique


def ev(task: str, project: str | None, event_type: str = "task.phase",
       event_id: str | None = None, **payload: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"event_type": event_type, "task_id": task, "payload": payload,
                            "event_id": event_id or str(uuid.uuid4())}
    if project is not None:
        data["project_id"] = project
    return data


async def batch(client: Client, events: list[Any]) -> list[dict[str, Any]]:
    reply = await client.request("events", {"events": events})
    assert reply["type"] == "acks", reply
    acks: list[dict[str, Any]] = reply["data"]["acks"]
    assert len(acks) == len(events)
    return acks


async def events_seen(client: Client) -> list[dict[str, Any]]:
    return [m["data"] for m in await client.barrier() if m["type"] == "event"]


async def take_events(client: Client, n: int, timeout: float = WAIT * 4) -> list[dict[str, Any]]:
    """The next ``n`` events, in arrival order (other messages stay in the inbox)."""
    got = []
    for _ in range(n):
        got.append((await client.expect(lambda m: m.get("type") == "event", timeout))["data"])
    return got


async def test_an_event_id_sent_twice_arrives_once(connect_as: Any) -> None:
    project, task = unique("proj"), unique()
    alice: Client = await connect_as("alice")
    watcher: Client = await connect_as("carol")
    await watcher.request("subscribe", {"project_id": project})
    first = ev(task, project, made_at="ignored")
    first["made_at"] = "2026-01-02T03:04:05.678+01:00"
    ack = await alice.request("event", first)
    assert ack["type"] == "ack" and ack["data"]["duplicate"] is False
    stamps = ack["data"]
    assert stamps["event_id"] == first["event_id"] and stamps["offset"] == 1
    assert stamps["epoch"] and stamps["project_id"] == project and stamps["task_id"] == task
    again = await alice.request("event", first)
    assert again["data"] == {**stamps, "duplicate": True}
    # In a batch: a known id, a new one, and the new one again in the same batch.
    second = ev(task, project)
    acks = await batch(alice, [first, second, second])
    assert [a["duplicate"] for a in acks] == [True, False, True]
    assert acks[0]["offset"] == 1 and acks[1]["offset"] == acks[2]["offset"] == 2
    assert acks[1]["timestamp"] == acks[2]["timestamp"]
    seen = await events_seen(watcher)
    assert [(e["event_id"], e["offset"]) for e in seen] == [(first["event_id"], 1),
                                                           (second["event_id"], 2)]
    assert seen[0]["made_at"] == "2026-01-02T03:04:05.678+01:00"
    assert seen[1]["made_at"] is None and seen[0]["timestamp"] == stamps["timestamp"]


async def test_a_resent_event_is_acked_after_its_lock_changed_hands(connect_as: Any) -> None:
    project, task = unique("proj"), unique()
    alice: Client = await connect_as("alice")
    bob: Client = await connect_as("bob")
    await alice.lock(task, project_id=project)
    sent = ev(task, project, "task.completed")
    first = await alice.request("event", sent)
    await alice.request("unlock", {"task_id": task})
    await bob.lock(task, project_id=project)
    again = await alice.request("event", sent)  # the outbox never saw the first ack
    assert again["type"] == "ack" and again["data"]["duplicate"] is True
    assert again["data"]["offset"] == first["data"]["offset"]
    new = await alice.request("event", ev(task, project, "task.phase"))
    assert new["type"] == "error" and new["data"]["code"] == "FORBIDDEN"


async def test_an_event_without_a_project_is_deduplicated_too(connect_as: Any) -> None:
    task = unique()
    alice: Client = await connect_as("alice")
    await alice.lock(task)  # a task without a project
    await alice.request("subscribe", {"task_id": task})
    sent = ev(task, None, "task.started")
    first = await alice.request("event", sent)
    assert first["data"]["offset"] is None and first["data"]["epoch"] is None
    again = await batch(alice, [sent])
    assert again[0]["duplicate"] is True and again[0]["timestamp"] == first["data"]["timestamp"]
    seen = [e for e in await events_seen(alice) if e["event_type"] == "task.started"]
    assert [e["event_id"] for e in seen] == [sent["event_id"]]


async def test_the_server_makes_an_event_id_when_none_is_sent(connect_as: Any) -> None:
    project, task = unique("proj"), unique()
    alice: Client = await connect_as("alice")
    await alice.request("subscribe", {"project_id": project})
    ack = await alice.request("event", {"event_type": "task.started", "task_id": task,
                                        "project_id": project})
    made = ack["data"]["event_id"]
    assert uuid.UUID(made) and ack["data"]["duplicate"] is False
    assert (await alice.event("task.started", task))["event_id"] == made


async def test_bad_event_ids_and_times_are_refused(connect_as: Any) -> None:
    task = unique()
    alice: Client = await connect_as("alice")
    for bad in ({"event_id": ""}, {"event_id": "x" * 101}, {"event_id": "a b"},
                {"event_id": 7}, {"event_id": "\u00e9t\u00e9"}, {"made_at": "yesterday"},
                {"made_at": "2026-02-30T00:00:00Z"}, {"made_at": 1700000000}):
        reply = await alice.request("event", {**ev(task, None), **bad})
        assert reply["type"] == "error" and reply["data"]["code"] == "INVALID_MESSAGE", bad
        assert next(iter(bad)) in reply["data"]["message"]


async def test_a_batch_keeps_its_good_entries_and_refuses_the_bad(connect_as: Any) -> None:
    project, task, locked, other = unique("proj"), unique(), unique(), unique("other")
    alice: Client = await connect_as("alice")
    bob: Client = await connect_as("bob")
    watcher: Client = await connect_as("carol")
    await watcher.request("subscribe", {"project_id": project})
    await bob.lock(locked, project_id=project)  # offset 1
    entries: list[Any] = [
        ev(task, project, phase="a"),
        "not an object",
        {**ev(task, project), "event_type": "Bad Type"},
        ev(task, project, "lock.acquired"),
        {**ev(task, project), "event_id": "bad id"},
        ev(locked, project),            # locked by bob
        ev(task, other),                # the task is in `project`
        ev(task, project, phase="b"),
    ]
    acks = await batch(alice, entries)
    codes = [a.get("error", {}).get("code") for a in acks]
    assert codes == [None, "INVALID_MESSAGE", "INVALID_MESSAGE", "FORBIDDEN",
                     "INVALID_MESSAGE", "FORBIDDEN", "FORBIDDEN", None]
    assert "events[2].event_type" in acks[2]["error"]["message"]
    assert "bob" in acks[5]["error"]["message"] and project in acks[6]["error"]["message"]
    assert acks[1]["event_id"] is None and acks[4]["event_id"] is None
    assert acks[3]["event_id"] == entries[3]["event_id"]
    assert [acks[0]["offset"], acks[7]["offset"]] == [2, 3]
    seen = await events_seen(watcher)
    assert [(e["event_type"], e["offset"]) for e in seen] == [
        ("lock.acquired", 1), ("task.phase", 2), ("task.phase", 3)]
    # The batch itself must be well formed.
    bad: dict[str, Any]
    for bad in ({}, {"events": []}, {"events": {}}, {"events": [ev(task, project)] * 201}):
        reply = await alice.request("events", bad)
        assert reply["type"] == "error" and reply["data"]["code"] == "INVALID_MESSAGE", bad


async def test_a_batch_costs_one_message_against_the_rate_limit(start_server: ServerFactory,
                                                               connect_as: Any) -> None:
    strict = start_server("--rate", "0.1", "--burst", "3")
    project = unique("proj")
    alice: Client = await connect_as("alice", on=strict)
    for n in range(3):
        acks = await batch(alice, [ev(unique(), project) for _ in range(200)])
        assert [a["offset"] for a in acks] == list(range(200 * n + 1, 200 * n + 201))
    refused = await alice.request("events", {"events": [ev(unique(), project)]})
    assert refused["data"]["code"] == "RATE_LIMITED"


async def test_offsets_are_consecutive_and_in_order_for_a_subscriber(connect_as: Any) -> None:
    project = unique("proj")
    alice: Client = await connect_as("alice")
    boss: Client = await connect_as("boss", role="admin")
    watcher: Client = await connect_as("carol")
    await watcher.request("subscribe", {"project_id": project})
    tasks = [unique() for _ in range(3)]
    for task in tasks:
        await alice.lock(task, project_id=project, ttl=1 if task == tasks[2] else 60)
        await alice.request("event", ev(task, project, "task.started"))
        await batch(alice, [ev(task, project, "task.transcript", content=str(i))
                            for i in range(5)])
    await boss.lock(tasks[0], project_id=project, force=True)  # stolen
    await alice.request("unlock", {"task_id": tasks[1]})
    # tasks[2] expires (ttl 1): the sweeper announces it.
    await watcher.event("lock.expired", tasks[2], timeout=WAIT)
    seen = await events_seen(watcher)
    offsets = [e["offset"] for e in seen]
    assert offsets == list(range(1, len(seen) + 1)), offsets
    assert len(seen) == 3 * 7 + 2  # the expired one was taken out of the inbox
    assert all(e["event_id"] for e in seen)


async def test_replay_since_after_a_reconnect(connect_as: Any) -> None:
    project, task = unique("proj"), unique()
    alice: Client = await connect_as("alice")
    watcher: Client = await connect_as("carol")
    sub = await watcher.request("subscribe", {"project_id": project})
    epoch = sub["data"]["epoch"]
    assert (sub["data"]["last_offset"], sub["data"]["truncated"]) == (0, False)
    await batch(alice, [ev(task, project, content=str(i)) for i in range(3)])
    seen = await take_events(watcher, 3)
    last = seen[-1]["offset"]
    await watcher.close()
    # Missed while away: published events and a lock's.
    await batch(alice, [ev(task, project, content=str(i)) for i in range(3, 6)])
    await alice.lock(task, project_id=project)
    back: Client = await connect_as("carol")
    sub = await back.request("subscribe", {"project_id": project, "since": last,
                                           "epoch": epoch})
    assert sub["type"] == "subscribed", sub
    assert sub["data"]["epoch"] == epoch and sub["data"]["truncated"] is False
    assert sub["data"]["last_offset"] == 7
    missed = await take_events(back, 4)
    assert [e["offset"] for e in missed] == [4, 5, 6, 7]
    assert [e["payload"].get("content") for e in missed[:3]] == ["3", "4", "5"]
    assert missed[3]["event_type"] == "lock.acquired" and missed[3]["user"] == "alice"
    # Then live ones, and nothing twice.
    await alice.request("event", ev(task, project, content="live"))
    live = await take_events(back, 1)
    assert live[0]["offset"] == 8 and live[0]["payload"]["content"] == "live"
    assert not await events_seen(back)
    # A task subscription takes no since.
    refused = await back.request("subscribe", {"task_id": task, "since": 0})
    assert refused["data"]["code"] == "INVALID_MESSAGE"
    for bad in ({"since": -1}, {"since": "3"}, {"since": True}, {"epoch": "a b"}):
        refused = await back.request("subscribe", {"project_id": project, **bad})
        assert refused["data"]["code"] == "INVALID_MESSAGE", bad


async def test_replay_hands_over_to_live_events_without_a_gap(start_server: ServerFactory,
                                                              connect_as: Any) -> None:
    """Events keep coming while a long replay is read and paced by a small send queue: the
    subscriber sees every offset exactly once, in order."""
    busy = start_server("--rate", "100000", "--burst", "100000", "--send-queue", "64")
    project = unique("proj")
    alice: Client = await connect_as("alice", on=busy)
    for _ in range(10):
        await batch(alice, [ev(unique(), project, content="before") for _ in range(200)])
    watcher: Client = await connect_as("carol", on=busy)

    async def publish_meanwhile() -> int:
        sent = 0
        for _ in range(20):
            await batch(alice, [ev(unique(), project, content="during") for _ in range(50)])
            sent += 50
        return sent

    publisher = asyncio.create_task(publish_meanwhile())
    sub = await watcher.request("subscribe", {"project_id": project, "since": 0})
    assert sub["data"]["truncated"] is False and sub["data"]["last_offset"] >= 2000
    total = 2000 + await publisher
    seen = await take_events(watcher, total)
    assert [e["offset"] for e in seen] == list(range(1, total + 1))
    assert {e["payload"]["content"] for e in seen[-50:]} == {"during"}
    assert not await events_seen(watcher)


async def test_a_since_older_than_what_is_kept_is_truncated(start_server: ServerFactory,
                                                            connect_as: Any) -> None:
    small = start_server("--events-kept", "100", "--rate", "10000", "--burst", "10000")
    project = unique("proj")
    alice: Client = await connect_as("alice", on=small)
    for _ in range(7):
        await batch(alice, [ev(unique(), project) for _ in range(50)])  # offsets 1..350
    watcher: Client = await connect_as("carol", on=small)
    sub = await watcher.request("subscribe", {"project_id": project, "since": 0})
    assert sub["data"]["truncated"] is True and sub["data"]["last_offset"] == 350
    epoch = sub["data"]["epoch"]
    n = 350 - (await watcher.expect(lambda m: m.get("type") == "event"))["data"]["offset"] + 1
    assert 100 <= n < 350
    rest = await take_events(watcher, n - 1)
    assert [e["offset"] for e in rest] == list(range(352 - n, 351))
    # Within what is kept: not truncated.
    again: Client = await connect_as("carol", on=small)
    sub = await again.request("subscribe", {"project_id": project, "since": 300,
                                            "epoch": epoch})
    assert sub["data"]["truncated"] is False
    assert [e["offset"] for e in await take_events(again, 50)] == list(range(301, 351))
    # An unknown epoch, or a since beyond the stream's end: everything kept, truncated.
    for data in ({"since": 300, "epoch": "not-this-one"}, {"since": 351}):
        other: Client = await connect_as("carol", on=small)
        sub = await other.request("subscribe", {"project_id": project, **data})
        assert sub["data"]["truncated"] is True, data
        assert len(await take_events(other, n)) == n
        assert not await events_seen(other)


async def test_a_restart_keeps_events_offsets_and_epoch(start_server: ServerFactory,
                                                        connect_as: Any) -> None:
    server = start_server()
    project, task = unique("proj"), unique()
    alice: Client = await connect_as("alice", on=server)
    first = ev(task, project, content="one")
    acks = await batch(alice, [first, ev(task, project, content="two")])
    epoch = acks[0]["epoch"]
    assert acks[1]["epoch"] == epoch
    await alice.close()
    server.stop(signal.SIGKILL)
    server.start()
    alice = await connect_as("alice", on=server)
    sub = await alice.request("subscribe", {"project_id": project, "since": 0, "epoch": epoch})
    assert sub["data"]["epoch"] == epoch and sub["data"]["truncated"] is False
    assert [e["payload"]["content"] for e in await take_events(alice, 2)] == ["one", "two"]
    again = await alice.request("event", first)
    assert again["data"]["duplicate"] is True and again["data"]["offset"] == 1
    ack = await alice.request("event", ev(task, project, content="three"))
    assert (ack["data"]["offset"], ack["data"]["epoch"]) == (3, epoch)
    # Another store is another stream: another epoch for the same project.
    fresh = start_server()
    bob: Client = await connect_as("bob", on=fresh)
    sub = await bob.request("subscribe", {"project_id": project, "since": 2, "epoch": epoch})
    assert sub["data"]["epoch"] != epoch and sub["data"]["truncated"] is True


def _events(server: ServerProc, query: str, user: str | None = "carol") -> tuple[int, Any]:
    return server.http(f"/api/events?{query}", token(user) if user else None)


async def test_get_api_events(server: ServerProc, connect_as: Any) -> None:
    project, task = unique("proj"), unique()
    alice: Client = await connect_as("alice")
    acks = await batch(alice, [ev(task, project, content=str(i)) for i in range(5)])
    epoch = acks[0]["epoch"]
    status, doc = await asyncio.to_thread(_events, server, f"project={project}&since=1&limit=2")
    assert status == 200, doc
    assert [e["payload"]["content"] for e in doc["events"]] == ["1", "2"]
    assert (doc["epoch"], doc["last_offset"], doc["truncated"]) == (epoch, 5, False)
    assert doc["events"][0]["event_id"] == acks[1]["event_id"]
    # Without since: the latest, oldest first.
    status, doc = await asyncio.to_thread(_events, server, f"project={project}&limit=2")
    assert [e["offset"] for e in doc["events"]] == [4, 5]
    status, doc = await asyncio.to_thread(_events, server,
                                          f"project={project}&since=3&epoch=other")
    assert doc["truncated"] is True and len(doc["events"]) == 5
    for bad in ("", "project=a%20b", f"project={project}&since=-1",
                f"project={project}&since=x", f"project={project}&limit=0",
                f"project={project}&limit=1001", f"project={project}&epoch=a%20b"):
        status, doc = await asyncio.to_thread(_events, server, bad)
        assert status == 400 and doc["error"]["code"] == "INVALID_MESSAGE", (bad, doc)
    status, doc = await asyncio.to_thread(_events, server, f"project={project}", None)
    assert status == 401 and doc["error"]["code"] == "UNAUTHORIZED"


async def test_get_api_events_answers_at_most_4_mib(server: ServerProc, connect_as: Any) -> None:
    project = unique("proj")
    alice: Client = await connect_as("alice")
    for _ in range(80):
        ack = await alice.request("event", ev(unique(), project, content="x" * 60_000))
        assert ack["type"] == "ack", ack
    status, first = await asyncio.to_thread(_events, server,
                                            f"project={project}&since=0&limit=1000")
    offsets = [e["offset"] for e in first["events"]]
    assert status == 200 and 40 < len(offsets) < 80 and offsets == list(range(1, len(offsets) + 1))
    status, rest = await asyncio.to_thread(_events, server,
                                           f"project={project}&since={offsets[-1]}&limit=1000")
    assert [e["offset"] for e in rest["events"]] == list(range(len(offsets) + 1, 81))
    status, newest = await asyncio.to_thread(_events, server, f"project={project}&limit=1000")
    assert [e["offset"] for e in newest["events"]][-1] == 80 and len(newest["events"]) < 80
