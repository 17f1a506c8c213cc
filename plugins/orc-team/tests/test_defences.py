"""Bad messages, oversized messages, floods, slow consumers, Origin, compression.

Each bad input gets its error code and leaves the connection open (only abuse closes it), and a
bystander on another connection keeps being served throughout.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import Client, ServerFactory, ServerProc, token, unique


async def assert_served(bystander: Client) -> None:
    """The other connection still answers at once."""
    start = time.monotonic()
    assert (await bystander.request("ping", timeout=2))["type"] == "pong"
    assert time.monotonic() - start < 1


@pytest.mark.parametrize(("raw", "code"), [
    ("{not json", "INVALID_JSON"),
    (b"\xff\xfe", "INVALID_MESSAGE"),  # a binary frame
    ("[1, 2]", "INVALID_MESSAGE"),
    ('{"type": 5, "id": "x"}', "INVALID_MESSAGE"),
    ('{"type": "fly", "id": "x"}', "UNKNOWN_TYPE"),
    ('{"id": "x"}', "INVALID_MESSAGE"),
    ('{"type": "lock", "id": "x"}', "INVALID_MESSAGE"),
    ('{"type": "lock", "id": "x", "data": {"task_id": "../etc"}}', "INVALID_MESSAGE"),
    ('{"type": "lock", "id": "x", "data": {"task_id": "T-1", "ttl": "60"}}', "INVALID_MESSAGE"),
    ('{"type": "lock", "id": "x", "data": {"task_id": "T-1", "ttl": 0}}', "INVALID_MESSAGE"),
    ('{"type": "lock", "id": "x", "data": {"task_id": "T-1", "force": 1}}', "INVALID_MESSAGE"),
    ('{"type": "lock", "id": "x", "data": [1]}', "INVALID_MESSAGE"),
    ('{"type": "subscribe", "id": "x", "data": {}}', "INVALID_MESSAGE"),
    ('{"type": "subscribe", "id": "x", "data": {"task_id": "A", "project_id": "B"}}',
     "INVALID_MESSAGE"),
    ('{"type": "presence", "id": "x", "data": {"status": "offline"}}', "INVALID_MESSAGE"),
    ('{"type": "event", "id": "x", "data": {"task_id": "T-1"}}', "INVALID_MESSAGE"),
    ('{"type": "event", "id": "x", "data": {"event_type": "Bad Type", "task_id": "T-1"}}',
     "INVALID_MESSAGE"),
    ('{"type": "event", "id": "x", "data": {"event_type": "a.b", "task_id": "T-1", '
     '"payload": 3}}', "INVALID_MESSAGE"),
    ('{"type": "ping", "id": {"nested": 1}}', "INVALID_MESSAGE"),
])
async def test_bad_message_gets_its_code_and_the_connection_lives(
        connect_as: Any, raw: str | bytes, code: str) -> None:
    bystander: Client = await connect_as("bob")
    alice: Client = await connect_as("alice")
    await alice.send(raw)
    error = await alice.expect(lambda m: m["type"] == "error")
    assert error["data"]["code"] == code, error
    expected_id = "x" if '"id": "x"' in str(raw) and code != "INVALID_JSON" else None
    assert error.get("id") == expected_id
    assert (await alice.request("ping"))["type"] == "pong"
    await assert_served(bystander)


async def test_one_mib_message_is_answered_too_large(connect_as: Any) -> None:
    bystander: Client = await connect_as("bob")
    alice: Client = await connect_as("alice")
    big = json.dumps({"type": "event", "id": "big", "data": {
        "event_type": "task.transcript", "task_id": "T-1", "payload": {"x": "y" * (1 << 20)}}})
    await alice.send(big)
    reply = await alice.expect(lambda m: m.get("id") == "big")
    assert reply["type"] == "error" and reply["data"]["code"] == "MESSAGE_TOO_LARGE"
    assert (await alice.request("ping"))["type"] == "pong"
    # Just under the limit is fine.
    ok = await alice.request("event", {"event_type": "task.transcript", "task_id": unique(),
                                       "payload": {"x": "y" * 60_000}})
    assert ok["type"] == "ack"
    await assert_served(bystander)


async def test_a_frame_past_the_hard_limit_closes_with_1009(connect_as: Any) -> None:
    bystander: Client = await connect_as("bob")
    alice: Client = await connect_as("alice")
    with pytest.raises(ConnectionClosed) as info:  # while sending, or right after
        await alice.send("x" * (3 << 20))
        await alice.expect(lambda m: False)
    # The server closes with 1009 as soon as the frame header arrives; while this client is
    # still writing the rest, the close frame can be lost to the connection's reset.
    assert info.value.rcvd is None or info.value.rcvd.code == 1009
    await assert_served(bystander)


async def test_flood_is_rate_limited_but_heartbeats_get_through(connect_as: Any) -> None:
    task = unique()
    bystander: Client = await connect_as("bob")
    await bystander.request("subscribe", {"project_id": "flood-watch"})
    alice: Client = await connect_as("alice")
    await alice.lock(task)
    for i in range(500):
        await alice.send({"type": "event", "id": f"f{i}", "data": {
            "event_type": "task.transcript", "task_id": task, "payload": {"line": i}}})
    beat = await alice.lock(task)  # lock traffic has its own bucket
    assert beat["acquired"] is True and beat["extended"] is True
    codes: dict[str, int] = {}
    for m in await alice.barrier():
        if str(m.get("id", "")).startswith("f"):
            kind = m["type"] if m["type"] != "error" else m["data"]["code"]
            codes[kind] = codes.get(kind, 0) + 1
    assert codes.get("RATE_LIMITED", 0) > 0 and codes.get("ack", 0) >= 200
    assert sum(codes.values()) == 500
    await assert_served(bystander)


async def test_abuse_closes_the_connection(server: ServerProc, connect_as: Any) -> None:
    bystander: Client = await connect_as("bob")
    # It reads its replies (else it would be dropped as a slow consumer, without a close code).
    alice: Client = await connect_as("alice", max_queue=None)
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(20):
            for _ in range(20_000):
                await alice.send("{not json")
            await alice.expect(lambda m: False, timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008, server.log[-2000:]
    await assert_served(bystander)


@pytest.fixture(scope="module")
def roomy(start_server: ServerFactory) -> ServerProc:
    """A high rate limit and a short send queue, to fill one client's queue quickly."""
    return start_server("--rate", "100000", "--burst", "100000", "--send-queue", "128")


async def test_slow_consumer_is_dropped_and_never_delays_others(roomy: ServerProc,
                                                                connect_as: Any) -> None:
    project, task, n = unique("proj"), unique(), 600
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", roomy.port))
    slow = await connect(roomy.ws_url(token("slow"), "slow-1"), sock=sock, max_queue=1,
                         open_timeout=5)
    await slow.send(json.dumps({"type": "subscribe", "id": "s", "data": {"project_id": project}}))
    assert json.loads(await slow.recv())["type"] in ("subscribed", "presence")
    fast: Client = await connect_as("fast", on=roomy, max_queue=None)  # reads all the time
    await fast.request("subscribe", {"project_id": project})
    publisher: Client = await connect_as("pub", on=roomy)
    line = "z" * 32_000
    got: list[int] = []
    progress = asyncio.Condition()

    async def publish() -> None:
        # Keep at most 32 events ahead of the fast reader (its queue holds 128): on 2 CPUs a
        # publisher sharing this event loop could otherwise outrun it and get *it* dropped too.
        for i in range(n):
            async with progress:
                await progress.wait_for(lambda i=i: i - len(got) < 32)  # type: ignore[misc]
            await publisher.send({"type": "event", "data": {
                "event_type": "task.transcript", "task_id": task, "project_id": project,
                "payload": {"i": i, "line": line}}})

    start = time.monotonic()
    sending = asyncio.create_task(publish())
    for _ in range(n):
        got.append((await fast.event("task.transcript", task))["payload"]["i"])
        async with progress:
            progress.notify_all()
    await sending
    assert got == list(range(n))
    assert time.monotonic() - start < 15
    await fast.presence("slow", "offline", timeout=5)
    assert "send queue full" in roomy.log
    slow.transport.abort()


async def test_origin_check(server: ServerProc, start_server: ServerFactory) -> None:
    url = server.ws_url(token("alice"))
    with pytest.raises(InvalidStatus) as info:
        await connect(url, origin="http://evil.example", open_timeout=5)  # type: ignore[arg-type]
    assert info.value.response.status_code == 403
    same = await connect(url, origin=f"http://{server.base}", open_timeout=5)  # type: ignore[arg-type]
    await same.close()
    allowing = start_server("--allow-origin", "https://dash.example")
    ok = await connect(allowing.ws_url(token("alice")), origin="https://dash.example",  # type: ignore[arg-type]
                       open_timeout=5)
    await ok.close()
    allowing.stop()


async def test_permessage_deflate_is_off(server: ServerProc) -> None:
    ws = await connect(server.ws_url(token("alice")), compression="deflate", open_timeout=5)
    try:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
    finally:
        await ws.close()
