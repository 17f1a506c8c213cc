"""The spec's exchanges, message by message, with DESIGN's rules (ids, NOT_FOUND, ack, stamps)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from conftest import WAIT, Client, ServerFactory, ServerProc, elapsed_since, unique


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


# -- text that cannot be UTF-8, numbers that are not JSON (issue 8, point 2) -------------------


def strict_json(raw: str | bytes) -> Any:
    """What any JSON parser accepts: no NaN / Infinity (Python's json takes them)."""
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")
    return json.loads(raw, parse_constant=refuse)


async def strict_error(client: Client) -> dict[str, Any]:
    """The next error, read raw: everything the server sent up to it must be strict JSON."""
    async with asyncio.timeout(WAIT):
        while True:
            message = strict_json(await client.ws.recv())
            if message["type"] == "error":
                assert isinstance(message, dict)
                return message


EVIL = '{"type":"event","id":"evil","data":{"event_type":"task.phase","task_id":"%s",' \
       '"project_id":"%s","payload":{"phase":"\\ud800"}}}'


@pytest.mark.parametrize("where", [
    "payload value", "payload key", "nested list", "data key", "message key", "event_type",
    "escaped pair then a lone half"])
async def test_a_lone_surrogate_anywhere_is_refused_and_stores_nothing(
        server: ServerProc, connect_as: Any, where: str) -> None:
    project, task = unique("proj"), unique("EVIL")
    raw = {
        "payload value": EVIL % (task, project),
        "payload key": EVIL.replace('"phase":"\\ud800"', '"\\udfff":"x"') % (task, project),
        "nested list": EVIL.replace('"\\ud800"', '[1, {"a": ["\\udc00"]}]') % (task, project),
        "data key": EVIL.replace('"payload"', '"\\ud83d"') % (task, project),
        "message key": EVIL.replace('"type"', '"\\ud800": 1, "type"') % (task, project),
        "event_type": EVIL.replace("task.phase", "task.\\ud800") % (task, project),
        "escaped pair then a lone half": EVIL.replace(
            '"\\ud800"', '"\\ud83d\\ude00 \\ude00"') % (task, project),
    }[where]
    alice: Client = await connect_as("alice")
    watcher: Client = await connect_as("bob")
    await watcher.request("subscribe", {"project_id": project})
    await alice.send(raw)
    reply = await alice.expect(lambda m: m.get("id") == "evil")
    assert reply["type"] == "error" and reply["data"]["code"] == "INVALID_MESSAGE", reply
    assert "UTF-8" in reply["data"]["message"]
    # Nothing was executed or stored: the task is unknown, the project's stream is untouched,
    # and both subscriptions are answered.
    sub = await alice.request("subscribe", {"project_id": project})
    assert sub["type"] == "subscribed" and sub["data"]["current_state"] == {"offset": 0,
                                                                            "tasks": []}
    assert (await alice.request("subscribe", {"task_id": task}))["data"]["code"] == "NOT_FOUND"
    assert not [m for m in await watcher.barrier() if m["type"] == "event"]
    assert "Traceback" not in server.log


async def test_a_well_formed_escaped_pair_is_text(connect_as: Any) -> None:
    """An emoji sent as ``\\ud83d\\ude00`` (what ``json.dumps`` writes) is one character."""
    project, task = unique("proj"), unique()
    alice: Client = await connect_as("alice")
    ack = await alice.request("event", {"event_type": "task.phase", "task_id": task,
                                        "project_id": project, "payload": {"phase": "ok 😀"}})
    assert ack["type"] == "ack"
    state = (await alice.request("subscribe", {"task_id": task}))["data"]["current_state"]
    assert state["phase"] == "ok 😀"


async def test_an_unusable_id_is_answered_with_id_null_and_nothing_is_done(
        connect_as: Any) -> None:
    task = unique()
    alice: Client = await connect_as("alice")
    bob: Client = await connect_as("bob")
    await alice.send('{"type":"lock","id":"\\udfff","data":{"task_id":"' + task + '"}}')
    reply = await strict_error(alice)
    assert reply["type"] == "error" and reply["data"]["code"] == "INVALID_MESSAGE", reply
    assert "id" in reply and reply["id"] is None
    # The lock was not granted: another member gets it.
    assert (await bob.lock(task))["acquired"] is True


@pytest.mark.parametrize("raw", [
    '{"type":"ping","id":NaN}',
    '{"type":"ping","id":Infinity}',
    '{"type":"ping","id":-Infinity}',
    '{"type":"ping","id":1e400}',
    '{"type":"lock","id":"n","data":{"task_id":"T-NAN","ttl":NaN}}',
    '{"type":"event","id":"n","data":{"event_type":"task.phase","task_id":"T-NAN",'
    '"payload":{"x":[-1e999]}}}',
])
async def test_non_finite_numbers_are_refused_and_never_echoed(connect_as: Any,
                                                               raw: str) -> None:
    alice: Client = await connect_as("alice")
    await alice.send(raw)
    reply = await strict_error(alice)  # what the server sends is always JSON
    assert reply["type"] == "error" and reply["data"]["code"] == "INVALID_JSON", reply
    assert reply.get("id") is None
    assert (await alice.request("ping"))["type"] == "pong"


@pytest.mark.parametrize("frame", [
    b'{"type":"ping","id":"\xff"}',  # not UTF-8 at all
    b'{"type":"ping","id":"\xed\xa0\x80"}',  # a surrogate encoded as if it were a character
    b'{"type":"ping","id":"\xc0\xaf"}',  # an overlong encoding
])
async def test_a_text_frame_that_is_not_utf8_closes_with_1007(server: ServerProc,
                                                               connect_as: Any,
                                                               frame: bytes) -> None:
    bystander: Client = await connect_as("bob")
    alice: Client = await connect_as("alice")
    await alice.ws.send(frame, text=True)  # a real text frame carrying these bytes
    with pytest.raises(ConnectionClosed) as info:
        await alice.expect(lambda m: False)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1007, server.log[-2000:]
    assert (await bystander.request("ping"))["type"] == "pong"
