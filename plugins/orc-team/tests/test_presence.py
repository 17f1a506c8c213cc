"""Presence seen by another client: online, active, idle, away, back online, offline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from conftest import Client, ServerFactory, ServerProc, token, unique


@pytest.fixture(scope="module")
def quick(start_server: ServerFactory) -> ServerProc:
    """Away after 1 s of silence; a peer that misses a keepalive ping is dropped in 0.5 s."""
    return start_server("--away-after", "1", "--keepalive", "1")


async def test_online_away_back_and_offline(quick: ServerProc, connect_as: Any) -> None:
    bob: Client = await connect_as("bob", on=quick)
    alice: Client = await connect_as("alice", on=quick)
    online = await bob.presence("alice", "online")
    assert online["event_type"] == "presence.online" and online["display_name"] == "Alice"
    went = time.monotonic()
    away = await bob.presence("alice", "away", timeout=4)
    assert away["event_type"] == "presence.away"
    assert 0.9 <= time.monotonic() - went <= 3
    # A keepalive ping is not activity; any other message is.
    await alice.request("ping")
    await alice.request("subscribe", {"project_id": unique("proj")})
    assert (await bob.presence("alice", "online"))["event_type"] == "presence.online"
    await alice.close()
    offline = await bob.presence("alice", "offline")
    assert offline["event_type"] == "presence.offline" and offline["connections"] == 0


async def test_active_while_running_a_task_does_not_go_away(quick: ServerProc,
                                                            connect_as: Any) -> None:
    task = unique()
    bob: Client = await connect_as("bob", on=quick)
    alice: Client = await connect_as("alice", on=quick)
    await alice.request("presence", {"active_task": task})
    assert (await bob.presence("alice", "active"))["active_task"] == task
    bob.inbox.clear()
    with pytest.raises(TimeoutError):
        await bob.presence("alice", "away", timeout=1.6)
    await alice.request("presence", {"status": "online", "active_task": None})
    assert (await bob.presence("alice", "online"))["event_type"] == "presence.idle"


async def test_offline_only_when_the_last_connection_closes(quick: ServerProc,
                                                           connect_as: Any) -> None:
    task = unique()
    bob: Client = await connect_as("bob", on=quick)
    laptop: Client = await connect_as("alice", on=quick)
    await bob.presence("alice", "online")
    desktop: Client = await connect_as("alice", on=quick)
    await desktop.request("presence", {"active_task": task})
    await bob.presence("alice", "active")
    _, body = quick.http("/api/presence", token("bob"))
    alice = next(p for p in body["presence"] if p["user_id"] == "alice")
    assert alice["connections"] == 2 and alice["active_task"] == task
    await desktop.close()  # the connection running the task goes: alice is idle, not offline
    idle = await bob.presence("alice", "online")
    assert idle["connections"] == 1 and idle["active_task"] is None
    await laptop.close()
    await bob.presence("alice", "offline")


async def test_who_left_stays_listed_as_offline_and_once_when_back(quick: ServerProc,
                                                                   connect_as: Any) -> None:
    """The listing shows who was here, not only who is: offline with when they left."""
    user = unique("dana").lower()
    bob: Client = await connect_as("bob", on=quick)
    dana: Client = await connect_as(user, on=quick)
    await bob.presence(user, "online")
    await dana.close()
    left = await bob.presence(user, "offline")

    def listed() -> list[dict[str, Any]]:
        _, body = quick.http("/api/presence", token("bob"))
        return [p for p in body["presence"] if p["user_id"] == user]

    [gone] = listed()
    assert (gone["status"], gone["connections"], gone["active_task"]) == ("offline", 0, None)
    assert gone["last_seen"] == left["last_seen"]
    again: Client = await connect_as(user, on=quick)
    await bob.presence(user, "online")
    [back] = listed()
    assert (back["status"], back["connections"]) == ("online", 1)
    await again.close()


CLIENT = """
import sys, time
from websockets.sync.client import connect
ws = connect(sys.argv[1], ping_interval=None)
print("connected", flush=True)
time.sleep(60)
"""


async def test_dead_peer_goes_offline_through_keepalive(quick: ServerProc,
                                                        connect_as: Any) -> None:
    bob: Client = await connect_as("bob", on=quick)
    peer = subprocess.Popen([sys.executable, "-c", CLIENT,
                             quick.ws_url(token("zed"), "zed-1")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert peer.stdout is not None and peer.stdout.readline().strip() == "connected"
        await bob.presence("zed", "online")
        os.kill(peer.pid, signal.SIGSTOP)  # alive, socket open, but answers no ping
        stopped = time.monotonic()
        await bob.presence("zed", "offline", timeout=5)
        assert time.monotonic() - stopped < 4
    finally:
        peer.kill()
        peer.wait(timeout=5)
