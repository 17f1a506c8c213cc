"""The spec's exchanges, message by message, with DESIGN's rules (ids, NOT_FOUND, ack, stamps)."""

from __future__ import annotations

import json
from typing import Any

from conftest import Client, ServerFactory, ServerProc, elapsed_since, unique


async def test_ping_pong_with_and_without_id(connect_as: Any) -> None:
    alice: Client = await connect_as("alice")
    assert await alice.request("ping") == {"type": "pong", "id": "alice-1"}
    await alice.send({"type": "ping"})
    assert await alice.expect(lambda m: m["type"] == "pong") == {"type": "pong"}


async def test_subscribe_to_unknown_task_is_not_found(connect_as: Any) -> None:
    alice: Client = await connect_as("alice")
    task = unique("TASK-XX")
    reply = await alice.request("subscribe", {"task_id": task})
    assert reply == {"type": "error", "id": "alice-1",
                     "data": {"code": "NOT_FOUND", "message": f"Task {task} not found"}}


async def test_lock_then_subscribe_carries_current_state(connect_as: Any) -> None:
    alice: Client = await connect_as("alice")
    task = unique()
    result = await alice.lock(task, ttl=60, project_id="acme")
    assert result["acquired"] is True and result["task_id"] == task
    assert result["owner"] == "alice" and result["owner_name"] == "Alice"
    assert isinstance(result["token"], int) and result["token"] >= 1
    assert 58 < -elapsed_since(result["expires_at"]) <= 60
    reply = await alice.request("subscribe", {"task_id": task})
    assert reply["type"] == "subscribed" and reply["id"] == "alice-2"
    assert reply["data"]["task_id"] == task
    state = reply["data"]["current_state"]
    assert state["project_id"] == "acme"
    assert state["lock"]["owner"] == "alice" and state["lock"]["token"] == result["token"]


async def test_published_event_reaches_task_and_project_subscribers_once(
        connect_as: Any) -> None:
    project, task = unique("proj"), unique()
    executor: Client = await connect_as("alice")
    by_task: Client = await connect_as("bob")
    by_project: Client = await connect_as("carol")
    by_both: Client = await connect_as("dave")
    by_none: Client = await connect_as("erin")
    # The project subscription needs no prior knowledge; the task one does.
    for c in (by_project, by_both):
        reply = await c.request("subscribe", {"project_id": project})
        assert reply["type"] == "subscribed" and reply["data"]["project_id"] == project
        assert reply["data"]["current_state"] == {"offset": 0, "tasks": []}
    ack = await executor.request("event", {"event_type": "task.started", "task_id": task,
                                           "project_id": project, "payload": {"phase": "spec"}})
    assert ack["type"] == "ack" and ack["data"]["offset"] == 1
    for c in (by_task, by_both):
        assert (await c.request("subscribe", {"task_id": task}))["type"] == "subscribed"
    payload = {"status": "running", "phase": "test", "iteration": 1}
    ack = await executor.request("event", {"event_type": "state", "task_id": task,
                                           "project_id": project, "payload": payload})
    assert ack["data"]["offset"] == 2
    for c in (by_task, by_project, by_both):
        got = await c.event("state", task)
        assert got["payload"] == payload and got["offset"] == 2
        assert got["user"] == "alice" and got["user_name"] == "Alice"
        assert got["project_id"] == project and abs(elapsed_since(got["timestamp"])) < 5
        rest = await c.barrier()
        assert not [m for m in rest if m["type"] == "event" and m["data"]["offset"] == 2], \
            "delivered twice"
    assert not [m for m in await by_none.barrier() if m["type"] == "event"]
    # The state events built the task's current_state.
    reply = await by_none.request("subscribe", {"task_id": task})
    state = reply["data"]["current_state"]
    assert (state["status"], state["phase"], state["iteration"]) == ("running", "test", 1)
    assert state["updated_by"] == "alice"
    project_state = (await by_none.request("subscribe", {"project_id": project}))["data"]
    assert project_state["current_state"]["offset"] == 2
    assert [t["task_id"] for t in project_state["current_state"]["tasks"]] == [task]


async def test_a_reply_longer_than_64_kib_arrives_intact(start_server: ServerFactory,
                                                          connect_as: Any) -> None:
    """Replies skip aiohttp's writer (see ``connection.text_frame``); a project's current state
    is the one reply that can outgrow a 16-bit frame length."""
    roomy = start_server("--rate", "100000", "--burst", "100000")
    project, n = unique("proj"), 600
    alice: Client = await connect_as("alice", on=roomy)
    for i in range(n):
        await alice.send({"type": "event", "data": {"event_type": "task.started",
                                                    "task_id": f"T-{i:04d}-{project}",
                                                    "project_id": project}})
    reply = await alice.request("subscribe", {"project_id": project})
    state = reply["data"]["current_state"]
    assert state["offset"] == n and len(state["tasks"]) == n
    assert {t["status"] for t in state["tasks"]} == {"running"}
    assert len(json.dumps(reply, separators=(",", ":"))) > 65_535
    assert await alice.request("ping") == {"type": "pong", "id": "alice-2"}  # still in step
    roomy.stop()


async def test_unsubscribe_stops_delivery(connect_as: Any) -> None:
    task = unique()
    alice: Client = await connect_as("alice")
    bob: Client = await connect_as("bob")
    await alice.lock(task)
    assert (await bob.request("subscribe", {"task_id": task}))["type"] == "subscribed"
    reply = await bob.request("unsubscribe", {"task_id": task})
    assert reply == {"type": "unsubscribed", "id": "bob-2",
                     "data": {"task_id": task, "was_subscribed": True}}
    await alice.request("event", {"event_type": "task.phase", "task_id": task})
    assert not [m for m in await bob.barrier() if m["type"] == "event"]


async def test_lock_conflict_names_the_owner(connect_as: Any) -> None:
    task = unique()
    alice: Client = await connect_as("alice")
    bob: Client = await connect_as("bob")
    mine = await alice.lock(task)
    theirs = await bob.lock(task)
    assert theirs["acquired"] is False and theirs["task_id"] == task
    assert theirs["owner"] == "alice" and theirs["owner_name"] == "Alice"
    assert theirs["expires_at"] == mine["expires_at"] and theirs["token"] == mine["token"]


async def test_unlock_by_owner_and_by_another(connect_as: Any) -> None:
    task = unique()
    alice: Client = await connect_as("alice")
    bob: Client = await connect_as("bob")
    token = (await alice.lock(task))["token"]
    await bob.request("subscribe", {"task_id": task})
    reply = await bob.request("unlock", {"task_id": task})
    assert reply["type"] == "error" and reply["data"]["code"] == "NOT_LOCK_OWNER"
    assert "alice" in reply["data"]["message"]
    reply = await alice.request("unlock", {"task_id": task})
    assert reply == {"type": "unlock_result", "id": "alice-2",
                     "data": {"released": True, "task_id": task, "token": token}}
    released = await bob.event("lock.released", task)
    assert released["payload"]["owner"] == "alice" and released["payload"]["forced_by"] is None
    again = await alice.request("unlock", {"task_id": task})
    assert again["data"] == {"released": False, "task_id": task}


async def test_presence_update_is_answered_and_broadcast(connect_as: Any) -> None:
    task = unique()
    bob: Client = await connect_as("bob")
    alice: Client = await connect_as("alice")
    await bob.presence("alice", "online")
    reply = await alice.request("presence", {"status": "online", "active_task": task})
    assert reply["type"] == "presence" and reply["data"]["status"] == "active"
    seen = await bob.presence("alice", "active")
    assert seen["active_task"] == task and seen["display_name"] == "Alice"
    assert seen["event_type"] == "presence.active"
    await alice.send({"type": "presence", "data": {"active_task": None}})  # no id: no reply
    assert (await bob.presence("alice", "online"))["event_type"] == "presence.idle"
    assert not [m for m in await alice.barrier() if m.get("id")]


async def test_every_id_gets_exactly_one_reply(connect_as: Any) -> None:
    alice: Client = await connect_as("alice")
    task = unique()
    batch: list[dict[str, Any] | str] = [
        {"type": "ping", "id": 1},
        {"type": "lock", "id": "a", "data": {"task_id": task}},
        {"type": "lock", "id": "b", "data": {"task_id": task}},  # extension
        {"type": "subscribe", "id": "c", "data": {"task_id": task}},
        {"type": "subscribe", "id": "d", "data": {"task_id": unique("NOPE")}},
        {"type": "unsubscribe", "id": "e", "data": {"task_id": task}},
        {"type": "presence", "id": "f", "data": {"status": "online"}},
        {"type": "event", "id": "g", "data": {"event_type": "task.phase", "task_id": task}},
        {"type": "nope", "id": "h"},
        {"type": "lock", "id": "i", "data": {"task_id": 7}},
        {"type": "unlock", "id": "j", "data": {"task_id": task}},
        {"type": "event", "id": "k", "data": {"event_type": "lock.acquired", "task_id": task}},
        json.dumps({"type": "ping", "id": 2.5}),
    ]
    for message in batch:
        await alice.send(message)
    replies = [m for m in await alice.barrier() if "id" in m]
    by_id: dict[Any, list[str]] = {}
    for m in replies:
        by_id.setdefault(m["id"], []).append(m["type"] if m["type"] != "error"
                                             else m["data"]["code"])
    assert by_id == {
        1: ["pong"], "a": ["lock_result"], "b": ["lock_result"], "c": ["subscribed"],
        "d": ["NOT_FOUND"], "e": ["unsubscribed"], "f": ["presence"], "g": ["ack"],
        "h": ["UNKNOWN_TYPE"], "i": ["INVALID_MESSAGE"], "j": ["unlock_result"],
        "k": ["FORBIDDEN"], 2.5: ["pong"],
    }


def test_http_views(server: ServerProc) -> None:
    from conftest import token

    assert server.http("/api/health") == (200, {"status": "ok"})
    status, body = server.http("/api/presence", token("alice"))
    assert status == 200 and isinstance(body["presence"], list)
    status, body = server.http("/api/locks", token("alice"))
    assert status == 200 and isinstance(body["locks"], list)
    status, body = server.http(f"/api/locks/{unique()}", token("alice"))
    assert status == 200 and body["locked"] is False and body["lock"] is None
    status, _ = server.http("/api/locks/..bad", token("alice"))
    assert status == 400
    import urllib.request

    with urllib.request.urlopen(f"http://{server.base}/", timeout=5) as resp:
        assert resp.status == 200 and "text/html" in resp.headers["Content-Type"]
        assert b"orc-team" in resp.read()
