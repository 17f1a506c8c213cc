"""Who may publish what about a task (issue 8, point 11), and which stamps are the server's.

While a task is locked, only its holder (user and client instance) publishes events about it;
an admin may, stamped ``holder: false``; a task's events stay in its project.  Real server, real
WebSocket clients.
"""

from __future__ import annotations

from typing import Any

from conftest import Client, unique


def code_of(reply: dict[str, Any]) -> str:
    return str(reply["data"]["code"]) if reply["type"] == "error" else str(reply["type"])


async def publish(client: Client, event_type: str, task: str, project: str | None = None,
                  **payload: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"event_type": event_type, "task_id": task, "payload": payload}
    if project is not None:
        data["project_id"] = project
    return await client.request("event", data)


async def state_of(client: Client, task: str) -> dict[str, Any]:
    reply = await client.request("subscribe", {"task_id": task})
    assert reply["type"] == "subscribed", reply
    state: dict[str, Any] = reply["data"]["current_state"]
    return state


async def test_only_the_holder_publishes_about_a_locked_task(connect_as: Any) -> None:
    project, task = unique("proj"), unique()
    alice: Client = await connect_as("alice")
    mallory: Client = await connect_as("mallory")
    watcher: Client = await connect_as("carol")
    await alice.lock(task, project_id=project)
    await watcher.request("subscribe", {"project_id": project})
    ack = await publish(alice, "task.started", task, project)
    assert ack["type"] == "ack" and ack["data"]["holder"] is True
    seen = await watcher.event("task.started", task)
    assert seen["user"] == "alice" and seen["holder"] is True
    # Any type, with or without the project: the holder's run is the one that speaks for it.
    for event_type in ("task.completed", "task.transcript", "state", "review.comment"):
        refused = await publish(mallory, event_type, task, project, status="completed")
        assert code_of(refused) == "FORBIDDEN", refused
        assert "alice" in refused["data"]["message"]
    refused = await publish(mallory, "task.completed", task)
    assert code_of(refused) == "FORBIDDEN"
    assert not [m for m in await watcher.barrier() if m["type"] == "event"]
    assert (await state_of(watcher, task))["status"] == "running"
    # Once released, anyone may publish again (stamped as not the holder).
    await alice.request("unlock", {"task_id": task})
    ack = await publish(mallory, "task.phase", task, project, phase="after")
    assert ack["type"] == "ack" and ack["data"]["holder"] is False


async def test_the_same_user_on_another_client_instance_is_not_the_holder(
        connect_as: Any) -> None:
    task = unique()
    laptop: Client = await connect_as("alice", client=unique("laptop"))
    desktop: Client = await connect_as("alice", client=unique("desktop"))
    await laptop.lock(task)
    assert code_of(await publish(desktop, "task.completed", task)) == "FORBIDDEN"
    # The holder's client instance on another connection is the holder.
    again: Client = await connect_as("alice", client=laptop.client)
    ack = await publish(again, "task.completed", task)
    assert ack["type"] == "ack" and ack["data"]["holder"] is True


async def test_an_admin_may_publish_stamped_as_not_the_holder(connect_as: Any) -> None:
    task = unique()
    alice: Client = await connect_as("alice")
    boss: Client = await connect_as("boss", role="admin")
    await alice.lock(task)
    await boss.request("subscribe", {"task_id": task})
    ack = await publish(boss, "task.failed", task, reason="the run is stuck")
    assert ack["type"] == "ack" and ack["data"]["holder"] is False
    seen = await boss.event("task.failed", task)
    assert seen["user"] == "boss" and seen["holder"] is False


async def test_an_event_made_before_the_lock_was_granted_is_kept_as_history(
        connect_as: Any) -> None:
    """An outbox delivering a finished run's events after another holder took the task: they
    are kept (nothing made offline is lost) but the holder's state stands."""
    project, task = unique("proj"), unique()
    alice: Client = await connect_as("alice")
    bob: Client = await connect_as("bob")
    watcher: Client = await connect_as("carol")
    await watcher.request("subscribe", {"project_id": project})
    await bob.lock(task, project_id=project)
    assert (await publish(bob, "task.started", task, project))["type"] == "ack"
    late = {"event_type": "task.completed", "task_id": task, "project_id": project,
            "payload": {"exit_code": 0}, "made_at": "2026-01-02T03:04:05.678Z"}
    ack = await alice.request("event", late)
    assert ack["type"] == "ack" and ack["data"]["holder"] is False, ack
    seen = await watcher.event("task.completed", task)
    assert seen["user"] == "alice" and seen["made_at"] == late["made_at"]
    assert (await state_of(watcher, task))["status"] == "running"  # bob's run, not alice's
    # Made during bob's lease (a clock ahead of the grant): refused as before.
    during = dict(late, made_at="2999-01-01T00:00:00Z")
    assert code_of(await alice.request("event", during)) == "FORBIDDEN"


async def test_a_task_stays_in_its_first_project(connect_as: Any) -> None:
    acme, other, task, locked = unique("acme"), unique("other"), unique(), unique()
    alice: Client = await connect_as("alice")
    watcher: Client = await connect_as("carol")
    await watcher.request("subscribe", {"project_id": acme})
    await watcher.request("subscribe", {"project_id": other})
    # Seen first through an event...
    assert (await publish(alice, "task.started", task, acme))["data"]["offset"] == 1
    refused = await publish(alice, "task.completed", task, other)
    assert code_of(refused) == "FORBIDDEN" and acme in refused["data"]["message"]
    # ... or through the lock's project; an admin cannot move it either.
    await alice.lock(locked, project_id=acme)
    assert code_of(await publish(alice, "task.started", locked, other)) == "FORBIDDEN"
    boss: Client = await connect_as("boss", role="admin")
    assert code_of(await publish(boss, "task.started", locked, other)) == "FORBIDDEN"
    # An event that names no project goes to the task's, with an offset of that project.
    ack = await publish(alice, "task.phase", task, phase="test")
    assert ack["data"]["project_id"] == acme and ack["data"]["offset"] is not None
    events = [m["data"] for m in await watcher.barrier() if m["type"] == "event"]
    assert {e["project_id"] for e in events} == {acme}
    assert [e["event_type"] for e in events if e["task_id"] == task] == ["task.started",
                                                                          "task.phase"]
    sub = await watcher.request("subscribe", {"project_id": other})
    assert sub["data"]["current_state"] == {"offset": 0, "tasks": []}


async def test_the_stamps_are_the_servers_not_the_senders(connect_as: Any) -> None:
    task = unique()
    mallory: Client = await connect_as("mallory")
    watcher: Client = await connect_as("carol")
    await mallory.lock(task)
    await watcher.request("subscribe", {"task_id": task})
    forged = {"user": "alice", "user_name": "Alice", "timestamp": "1970-01-01T00:00:00.000Z",
              "offset": 999, "holder": False}
    ack = await mallory.request("event", {"event_type": "task.phase", "task_id": task,
                                          "payload": {"phase": "x"}, **forged})
    assert ack["type"] == "ack" and ack["data"]["timestamp"] != forged["timestamp"]
    seen = await watcher.event("task.phase", task)
    assert (seen["user"], seen["user_name"], seen["holder"]) == ("mallory", "Mallory", True)
    assert seen["timestamp"] == ack["data"]["timestamp"] and seen["offset"] is None
    assert (await state_of(watcher, task))["updated_by"] == "mallory"


async def test_a_lock_under_another_project_does_not_move_the_task(connect_as: Any) -> None:
    acme, other, task = unique("acme"), unique("other"), unique()
    alice: Client = await connect_as("alice")
    watcher: Client = await connect_as("carol")
    assert (await publish(alice, "task.started", task, acme))["type"] == "ack"
    await watcher.request("subscribe", {"project_id": other})
    result = await alice.lock(task, project_id=other)
    assert result["acquired"] is True and result["project_id"] == acme, result
    assert code_of(await publish(alice, "task.phase", task, other, phase="x")) == "FORBIDDEN"
    assert not [m for m in await watcher.barrier() if m["type"] == "event"]
