"""Locks: races, holders (user + client instance), heartbeats, fencing, expiry, force."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from conftest import Client, ServerProc, elapsed_since, token, unique


async def test_two_users_racing_for_a_lock_one_wins(connect_as: Any) -> None:
    alice: Client = await connect_as("alice")
    bob: Client = await connect_as("bob")
    for _ in range(20):
        task = unique()
        a, b = await asyncio.gather(alice.lock(task), bob.lock(task))
        assert sorted([a["acquired"], b["acquired"]]) == [False, True], (a, b)
        winner = "alice" if a["acquired"] else "bob"
        assert a["owner"] == b["owner"] == winner
        assert a["token"] == b["token"] == 1


async def test_same_user_second_client_instance_is_refused(connect_as: Any) -> None:
    task = unique()
    laptop: Client = await connect_as("alice", client="laptop-1")
    desktop: Client = await connect_as("alice", client="desktop-1")
    first = await laptop.lock(task)
    assert first["acquired"] is True and first["client"] == "laptop-1"
    second = await desktop.lock(task)
    assert second["acquired"] is False
    assert second["owner"] == "alice" and second["client"] == "laptop-1"
    reply = await desktop.request("unlock", {"task_id": task})
    assert reply["data"]["code"] == "NOT_LOCK_OWNER"


async def test_heartbeat_from_the_holder_extends_and_keeps_the_token(connect_as: Any) -> None:
    task = unique()
    alice: Client = await connect_as("alice", client="cli-hb")
    first = await alice.lock(task, ttl=5)
    beat = await alice.lock(task, ttl=30)
    assert beat["acquired"] is True and beat["extended"] is True
    assert beat["token"] == first["token"] and beat["ttl"] == 30
    assert beat["expires_at"] > first["expires_at"]
    # The same client instance reconnecting (a new connection) is the same holder.
    await alice.close()
    again: Client = await connect_as("alice", client="cli-hb")
    renewed = await again.lock(task)
    assert renewed["extended"] is True and renewed["token"] == first["token"]
    # A heartbeat is not announced: only grants are.
    assert not [m for m in await again.barrier() if m["type"] == "event"]


async def test_fencing_token_increases_with_every_grant(connect_as: Any) -> None:
    task = unique()
    alice: Client = await connect_as("alice")
    bob: Client = await connect_as("bob")
    tokens = []
    for holder in (alice, bob, alice):
        result = await holder.lock(task)
        tokens.append(result["token"])
        assert (await holder.request("unlock", {"task_id": task}))["data"]["released"]
    assert tokens == [1, 2, 3]


async def test_lock_events_reach_task_and_project_subscribers(connect_as: Any) -> None:
    task, project = unique(), unique("proj")
    watcher: Client = await connect_as("carol")
    await watcher.request("subscribe", {"project_id": project})
    alice: Client = await connect_as("alice")
    result = await alice.lock(task, project_id=project, ttl=45)
    got = await watcher.event("lock.acquired", task)
    assert got["project_id"] == project and got["user"] == "alice" and got["offset"] >= 1
    assert got["payload"]["ttl"] == 45 and got["payload"]["token"] == result["token"]
    await alice.request("unlock", {"task_id": task})
    assert (await watcher.event("lock.released", task))["offset"] > got["offset"]


async def test_expiry_is_announced_within_a_second(connect_as: Any) -> None:
    task = unique()
    holder: Client = await connect_as("alice")
    watcher: Client = await connect_as("bob")
    result = await holder.lock(task, ttl=1)
    await watcher.request("subscribe", {"task_id": task})
    expired = await watcher.event("lock.expired", task, timeout=4)
    late = elapsed_since(result["expires_at"])
    assert 0 <= late <= 1.0, f"announced {late:.3f}s after expiry"
    assert expired["payload"]["previous_owner"] == "alice"
    # The holder hears it too, without subscribing: it no longer holds what it thinks it holds.
    assert (await holder.event("lock.expired", task))["payload"]["token"] == result["token"]
    taken = await watcher.lock(task)
    assert taken["acquired"] is True and taken["token"] == result["token"] + 1


async def test_members_force_is_refused_admins_steals(connect_as: Any) -> None:
    task = unique()
    alice: Client = await connect_as("alice")
    bob: Client = await connect_as("bob")
    boss: Client = await connect_as("boss", role="admin")
    watcher: Client = await connect_as("carol")
    held = await alice.lock(task)
    await watcher.request("subscribe", {"task_id": task})
    reply = await bob.request("lock", {"task_id": task, "force": True})
    assert reply["type"] == "error" and reply["data"]["code"] == "FORBIDDEN"
    assert (await bob.lock(task))["owner"] == "alice"
    stolen = await boss.lock(task, force=True)
    assert stolen["acquired"] is True and stolen["stolen_from"] == "alice"
    assert stolen["token"] == held["token"] + 1
    for c in (watcher, alice):  # alice is not subscribed: she is told as the old holder
        event = await c.event("lock.stolen", task)
        assert event["payload"]["old_owner"] == "alice"
        assert event["payload"]["new_owner"] == "boss"
        assert event["payload"]["token"] == stolen["token"]
    assert (await alice.lock(task))["acquired"] is False


async def test_forced_release_needs_admin(connect_as: Any) -> None:
    task = unique()
    alice: Client = await connect_as("alice")
    bob: Client = await connect_as("bob")
    boss: Client = await connect_as("boss", role="admin")
    await alice.lock(task)
    reply = await bob.request("unlock", {"task_id": task, "force": True})
    assert reply["data"]["code"] == "FORBIDDEN"
    reply = await boss.request("unlock", {"task_id": task, "force": True})
    assert reply["data"]["released"] is True
    event = await alice.event("lock.released", task)
    assert event["payload"]["forced_by"] == "boss"


async def test_lock_views_over_http(server: ServerProc, connect_as: Any) -> None:
    task = unique()
    alice: Client = await connect_as("alice", client="view-client")
    await alice.lock(task, ttl=120)
    status, body = server.http(f"/api/locks/{task}", token("bob"))
    assert status == 200 and body["locked"] is True
    assert body["lock"]["owner"] == "alice" and body["lock"]["client"] == "view-client"
    status, body = server.http("/api/locks", token("bob"))
    assert task in [lock["task_id"] for lock in body["locks"]]
    assert server.http("/api/locks")[0] == 401


async def test_many_grants_many_tasks_are_fast(connect_as: Any) -> None:
    """Not a benchmark: a guard against a lock cycle slowing to disk-sync speed."""
    alice: Client = await connect_as("alice")
    start = time.monotonic()
    for _ in range(50):
        task = unique()
        assert (await alice.lock(task))["acquired"]
        assert (await alice.request("unlock", {"task_id": task}))["data"]["released"]
    assert time.monotonic() - start < 5
