"""A restart (SIGTERM or SIGKILL) neither loses a lock nor grants it twice."""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Any

import pytest

from conftest import SECRET, Client, ServerFactory, elapsed_since, unique


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
