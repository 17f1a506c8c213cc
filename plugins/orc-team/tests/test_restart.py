"""A restart (SIGTERM or SIGKILL) neither loses a lock nor grants it twice."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from typing import Any

import pytest

from conftest import SECRET, Client, ServerFactory, elapsed_since, sqlite_only, unique


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
async def test_lock_survives_a_restart(start_server: ServerFactory, connect_as: Any,
                                       sig: signal.Signals) -> None:
    server = start_server()
    task = unique()
    alice: Client = await connect_as("alice", client="alice-laptop", on=server)
    held = await alice.lock(task, ttl=300, project_id="acme")
    # A few grants first, so the counter is visibly continued rather than restarted.
    assert held["token"] == 1
    for _ in range(2):
        assert (await alice.request("unlock", {"task_id": task}))["data"]["released"]
        held = await alice.lock(task, ttl=300, project_id="acme")
    assert held["token"] == 3
    code = server.stop(sig)
    assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), server.log
    if sig == signal.SIGTERM:
        assert server.logged("shutting down")
    server.start()  # same port, same store

    bob: Client = await connect_as("bob", on=server)
    refused = await bob.lock(task)
    assert refused["acquired"] is False and refused["owner"] == "alice"
    assert refused["token"] == 3 and refused["client"] == "alice-laptop"
    assert refused["expires_at"] == held["expires_at"]
    # The holder reconnects with the same client id and re-asserts: an extension, same token.
    again: Client = await connect_as("alice", client="alice-laptop", on=server)
    renewed = await again.lock(task, ttl=300)
    assert renewed["extended"] is True and renewed["token"] == 3
    assert -elapsed_since(renewed["expires_at"]) > 290
    assert (await again.request("unlock", {"task_id": task}))["data"]["released"]
    taken = await bob.lock(task)
    assert taken["acquired"] is True and taken["token"] == 4
    # Project offsets carry on too.
    sub = await bob.request("subscribe", {"project_id": "acme"})
    assert sub["data"]["current_state"]["offset"] >= 6
    server.stop()


@sqlite_only
def test_a_second_server_on_the_same_store_is_refused(start_server: ServerFactory) -> None:
    server = start_server()
    done = subprocess.run(
        [sys.executable, "-m", "orc_git", "team", "serve", "--port", "0", "--store",
         str(server.store)], env={"ORC_TEAM_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 3, done.stderr
    assert "in use by another orc team server" in done.stderr
    server.stop()


def test_a_busy_port_is_a_clear_failure(start_server: ServerFactory, tmp_path: Any) -> None:
    server = start_server()
    done = subprocess.run(
        [sys.executable, "-m", "orc_team.server", "--port", str(server.port), "--store",
         str(tmp_path / "other.sqlite3")], env={"ORC_TEAM_SECRET": SECRET},
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 3 and f"cannot listen on 127.0.0.1:{server.port}" in done.stderr
    assert "Traceback" not in done.stderr
    server.stop()


# -- nothing a client sends can wedge reads, now or after a restart (issue 8, point 2) --------


async def test_a_poisonous_event_leaves_its_project_readable_across_a_restart(
        start_server: ServerFactory, connect_as: Any) -> None:
    server = start_server()
    project, task = unique("acme"), unique("EVIL")
    mallory: Client = await connect_as("mallory", on=server)
    await mallory.send('{"type":"event","id":"evil","data":{"event_type":"task.phase",'
                       f'"task_id":"{task}","project_id":"{project}",'
                       '"payload":{"phase":"\\ud800"}}}')
    refused = await mallory.expect(lambda m: m.get("id") == "evil")
    for restart in (False, True):
        if restart:
            assert server.stop(signal.SIGKILL) == -signal.SIGKILL
            server.start()
        alice: Client = await connect_as("alice", on=server)
        by_project = await alice.request("subscribe", {"project_id": project})
        assert by_project["type"] == "subscribed", by_project
        by_task = await alice.request("subscribe", {"task_id": task})
        assert by_task["type"] == "error" and by_task["data"]["code"] == "NOT_FOUND"
    assert refused["type"] == "error" and refused["data"]["code"] == "INVALID_MESSAGE"
    assert "Traceback" not in server.log
    server.stop()


@sqlite_only
@pytest.mark.parametrize(("stored", "phase"), [
    ('{"status": "running", "phase": "\\ud800"}', "\\ud800"),  # json.dumps wrote it so
    ('{"status": "running", "\\udfff": {"deep": ["\\ud83d"]}, "phase": "p"}', "p"),
    ('{"status": "running", "phase": NaN}', None),
    ("{not json", None),
    ("[1, 2]", None),
], ids=["lone surrogate", "nested surrogates", "NaN", "not JSON", "not an object"])
async def test_a_poisoned_row_from_an_older_server_does_not_wedge_subscribe(
        start_server: ServerFactory, connect_as: Any, stored: str, phase: str | None) -> None:
    server = start_server()
    project, task = unique("acme"), unique("OLD")
    alice: Client = await connect_as("alice", on=server)
    ack = await alice.request("event", {"event_type": "task.started", "task_id": task,
                                        "project_id": project})
    assert ack["type"] == "ack"
    server.stop()
    with sqlite3.connect(server.store) as db:  # what an older version could leave behind
        db.execute("UPDATE tasks SET state = ? WHERE task_id = ?", (stored, task))
    db.close()
    server.start()
    bob: Client = await connect_as("bob", on=server)
    by_task = await bob.request("subscribe", {"task_id": task})
    assert by_task["type"] == "subscribed", by_task
    assert by_task["data"]["current_state"].get("phase") == phase
    by_project = await bob.request("subscribe", {"project_id": project})
    assert by_project["type"] == "subscribed", by_project
    assert [t["task_id"] for t in by_project["data"]["current_state"]["tasks"]] == [task]
    assert server.logged(f"{task}: its stored state")
    # A new event on the task still works, and repairs the row for good.
    ack = await alice_again(server, connect_as, task, project)
    assert ack["type"] == "ack", ack
    assert "Traceback" not in server.log
    server.stop()


async def alice_again(server: Any, connect_as: Any, task: str, project: str) -> dict[str, Any]:
    alice: Client = await connect_as("alice", on=server)
    return await alice.request("event", {"event_type": "task.phase", "task_id": task,
                                         "project_id": project, "payload": {"phase": "ok"}})
