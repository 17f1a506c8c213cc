"""Shared resources on a real server: versions, conflicts, bad input, events, restarts."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from typing import Any

import pytest

from orc_team.protocol import MAX_RESOURCE_BYTES

from conftest import WAIT, Client, ServerFactory, ServerProc, token, unique


def http(server: ServerProc, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, user: str = "alice") -> tuple[int, Any]:
    request = urllib.request.Request(f"http://{server.base}{path}", data=body, method=method)
    request.add_header("Authorization", f"Bearer {token(user)}")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


def put(server: ServerProc, rid: str, content: str, version: int | None,
        user: str = "alice", **body: Any) -> tuple[int, Any]:
    headers = {} if version is None else {"If-Match": str(version)}
    return http(server, "PUT", f"/api/resources/{rid}",
                json.dumps({"content": content, **body}).encode(), headers, user)


async def ws_put(client: Client, rid: str, content: Any, expected: Any,
                 **extra: Any) -> dict[str, Any]:
    return await client.request("resource_put", {"resource_id": rid, "content": content,
                                                 "expected_version": expected, **extra})


# -- versions over the WebSocket ------------------------------------------------------------

async def test_versions_are_kept_and_each_can_be_read(connect_as: Any) -> None:
    rid = unique("prompt")
    alice: Client = await connect_as("alice")
    bob: Client = await connect_as("bob")
    first = await ws_put(alice, rid, "one\n", 0)
    assert first["type"] == "resource", first
    assert first["data"]["version"] == 1 and first["data"]["updated_by"] == "alice"
    second = await ws_put(bob, rid, "two\n", 1)
    assert second["data"]["version"] == 2 and second["data"]["updated_by"] == "bob"
    latest = await alice.request("resource_get", {"resource_id": rid})
    assert latest["type"] == "resource"
    assert (latest["data"]["content"], latest["data"]["version"]) == ("two\n", 2)
    old = await alice.request("resource_get", {"resource_id": rid, "version": 1})
    assert (old["data"]["content"], old["data"]["updated_by"]) == ("one\n", "alice")
    missing = await alice.request("resource_get", {"resource_id": rid, "version": 3})
    assert missing["data"]["code"] == "NOT_FOUND"
    listed = await alice.request("resource_list")
    assert listed["type"] == "resources"
    [entry] = [r for r in listed["data"]["resources"] if r["resource_id"] == rid]
    assert entry["version"] == 2 and entry["updated_by"] == "bob" and "content" not in entry


async def test_a_stale_put_conflicts_with_the_whole_current_version(connect_as: Any) -> None:
    rid = unique("prompt")
    alice: Client = await connect_as("alice")
    bob: Client = await connect_as("bob")
    await ws_put(alice, rid, "base\n", 0)
    assert (await ws_put(bob, rid, "bob's\n", 1))["data"]["version"] == 2
    refused = await ws_put(alice, rid, "alice's\n", 1)
    assert refused["type"] == "error" and refused["id"] is not None
    data = refused["data"]
    assert data["code"] == "CONFLICT" and data["expected_version"] == 1
    assert data["current"]["version"] == 2 and data["current"]["content"] == "bob's\n"
    assert data["current"]["updated_by"] == "bob"
    assert "version 2, not 1" in data["message"]
    # Nothing was written, and a put at the current version goes through.
    assert (await alice.request("resource_get", {"resource_id": rid}))["data"]["version"] == 2
    assert (await ws_put(alice, rid, "alice's\n", 2))["data"]["version"] == 3


async def test_creating_twice_conflicts_and_a_put_to_nothing_is_not_found(
        connect_as: Any) -> None:
    rid = unique("cfg")
    alice: Client = await connect_as("alice")
    await ws_put(alice, rid, "x", 0)
    again = await ws_put(alice, rid, "y", 0)
    assert again["data"]["code"] == "CONFLICT" and "already exists" in again["data"]["message"]
    assert again["data"]["current"]["content"] == "x"
    ahead = await ws_put(alice, rid, "y", 5)
    assert ahead["data"]["code"] == "CONFLICT"
    nothing = await ws_put(alice, unique("cfg"), "y", 1)
    assert nothing["data"]["code"] == "NOT_FOUND"
    absent = await alice.request("resource_get", {"resource_id": unique("cfg")})
    assert absent["data"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize(("data", "needle"), [
    ({"resource_id": "../etc", "content": "x", "expected_version": 0}, "resource_id"),
    ({"resource_id": "a" * 101, "content": "x", "expected_version": 0}, "resource_id"),
    ({"resource_id": 7, "content": "x", "expected_version": 0}, "resource_id"),
    ({"content": "x", "expected_version": 0}, "resource_id is required"),
    ({"resource_id": "r", "content": 5, "expected_version": 0}, "content"),
    ({"resource_id": "r", "expected_version": 0}, "content is required"),
    ({"resource_id": "r", "content": "x"}, "expected_version is required"),
    ({"resource_id": "r", "content": "x", "expected_version": -1}, "expected_version"),
    ({"resource_id": "r", "content": "x", "expected_version": "1"}, "expected_version"),
    ({"resource_id": "r", "content": "x", "expected_version": True}, "expected_version"),
    ({"resource_id": "r", "content": "x", "expected_version": 0, "project_id": "a b"},
     "project_id"),
    ({"resource_id": "r", "content": "é" * (MAX_RESOURCE_BYTES // 2 + 1),
      "expected_version": 0}, "at most 65536 bytes"),
])
async def test_bad_puts_are_refused_clearly(connect_as: Any, data: dict[str, Any],
                                            needle: str) -> None:
    alice: Client = await connect_as("alice")
    reply = await alice.request("resource_put", data)
    assert reply["data"]["code"] == "INVALID_MESSAGE", reply
    assert needle in reply["data"]["message"]
    bad_get = await alice.request("resource_get", {"resource_id": "r", "version": 0})
    assert bad_get["data"]["code"] == "INVALID_MESSAGE"


async def test_a_lone_surrogate_in_content_is_refused(connect_as: Any) -> None:
    alice: Client = await connect_as("alice")
    raw = ('{"type":"resource_put","id":"s1","data":{"resource_id":"r","content":"\\ud800",'
           '"expected_version":0}}')
    await alice.send(raw)
    reply = await alice.expect(lambda m: m.get("id") == "s1")
    assert reply["data"]["code"] == "INVALID_MESSAGE"


async def test_the_largest_content_fits_however_it_is_escaped(connect_as: Any) -> None:
    """64 KiB of control characters is 384 KiB of JSON: still read (past the 64 KiB message
    limit, which other messages keep)."""
    alice: Client = await connect_as("alice")
    rid = unique("big")
    content = "\x01" * MAX_RESOURCE_BYTES
    made = await ws_put(alice, rid, content, 0)
    assert made["data"]["version"] == 1, made
    got = await alice.request("resource_get", {"resource_id": rid})
    assert got["data"]["content"] == content
    event = await alice.request("event", {"event_type": "task.note", "task_id": unique(),
                                          "payload": {"x": "y" * 70_000}})
    assert event["data"]["code"] == "MESSAGE_TOO_LARGE"
    over = await ws_put(alice, rid, "\x01" * (MAX_RESOURCE_BYTES + 1), 1)
    assert over["data"]["code"] == "INVALID_MESSAGE"
    assert "at most 65536 bytes" in over["data"]["message"]
    huge = await ws_put(alice, rid, "x" * (7 * MAX_RESOURCE_BYTES), 1)
    assert huge["data"]["code"] == "MESSAGE_TOO_LARGE" and huge["id"] is not None


async def test_clients_may_not_publish_resource_events(connect_as: Any) -> None:
    alice: Client = await connect_as("alice")
    reply = await alice.request("event", {"event_type": "resource.updated",
                                          "task_id": unique()})
    assert reply["data"]["code"] == "FORBIDDEN"


async def test_resource_updated_reaches_the_projects_subscribers_and_its_stream(
        server: ServerProc, connect_as: Any) -> None:
    project, rid = unique("proj"), unique("prompt")
    alice: Client = await connect_as("alice")
    watcher: Client = await connect_as("carol")
    other: Client = await connect_as("dave")
    await watcher.request("subscribe", {"project_id": project})
    await other.request("subscribe", {"project_id": unique("proj")})
    made = await ws_put(alice, rid, "hello", 0, project_id=project)
    assert made["data"]["project_id"] == project
    event = await watcher.event("resource.updated")
    assert event["payload"] == {"resource_id": rid, "version": 1, "updated_by": "alice"}
    assert event["project_id"] == project and event["user"] == "alice"
    assert isinstance(event["offset"], int) and event["task_id"] is None
    # A later version without project_id stays in the project.
    await ws_put(alice, rid, "hello again", 1)
    assert (await watcher.event("resource.updated"))["payload"]["version"] == 2
    assert not [m for m in await other.barrier() if m.get("type") == "event"]
    status, doc = server.http(f"/api/events?project={project}", token("alice"))
    assert status == 200
    assert [e["payload"]["version"] for e in doc["events"]
            if e["event_type"] == "resource.updated"] == [1, 2]


# -- HTTP -----------------------------------------------------------------------------------

def test_http_put_needs_if_match_and_conflicts_with_409(server: ServerProc) -> None:
    rid = unique("doc")
    status, doc = put(server, rid, "v1", None)
    assert status == 428 and "If-Match" in doc["error"]["message"]
    status, doc = put(server, rid, "v1", 0)
    assert status == 200 and doc["version"] == 1 and doc["content"] == "v1"
    status, doc = put(server, rid, "v2", 1, user="bob", project_id="acme")
    assert status == 200 and doc["version"] == 2 and doc["project_id"] == "acme"
    status, doc = put(server, rid, "mine", 1)
    assert status == 409
    assert doc["error"]["code"] == "CONFLICT" and doc["error"]["expected_version"] == 1
    assert doc["error"]["current"]["content"] == "v2"
    assert doc["error"]["current"]["updated_by"] == "bob"
    status, doc = http(server, "GET", f"/api/resources/{rid}?version=1")
    assert status == 200 and doc["content"] == "v1"
    status, doc = http(server, "GET", f"/api/resources/{rid}")
    assert status == 200 and doc["version"] == 2
    status, doc = http(server, "GET", "/api/resources")
    assert status == 200 and rid in [r["resource_id"] for r in doc["resources"]]
    status, doc = http(server, "GET", f"/api/resources/{unique('doc')}")
    assert status == 404 and doc["error"]["code"] == "NOT_FOUND"
    status, doc = put(server, unique("doc"), "x", 3)
    assert status == 404


@pytest.mark.parametrize(("path", "body", "headers", "needle"), [
    ("/api/resources/..x", b'{"content": "x"}', {"If-Match": "0"}, "resource_id"),
    ("/api/resources/ok", b'{"content": "x"}', {"If-Match": "v1"}, "If-Match"),
    ("/api/resources/ok", b'{"content": "x"}', {"If-Match": "-1"}, "If-Match"),
    ("/api/resources/ok", b"not json", {"If-Match": "0"}, "JSON"),
    ("/api/resources/ok", b'["content"]', {"If-Match": "0"}, "object"),
    ("/api/resources/ok", b'{"content": "\xff"}', {"If-Match": "0"}, "JSON"),
    ("/api/resources/ok", b'{"content": "\\udc80"}', {"If-Match": "0"}, "UTF-8"),
    ("/api/resources/ok", b'{"content": 1}', {"If-Match": "0"}, "body.content"),
    ("/api/resources/ok", b'{"content": "x", "project_id": "../p"}', {"If-Match": "0"},
     "project_id"),
])
def test_http_bad_input_is_400(server: ServerProc, path: str, body: bytes,
                               headers: dict[str, str], needle: str) -> None:
    status, doc = http(server, "PUT", path, body, headers)
    assert status == 400, doc
    assert doc["error"]["code"] == "INVALID_MESSAGE" and needle in doc["error"]["message"]


def test_http_bodies_are_bounded_and_reads_need_a_token(server: ServerProc) -> None:
    rid = unique("doc")
    status, doc = put(server, rid, "x" * (MAX_RESOURCE_BYTES + 1), 0)
    assert status == 400 and "at most 65536 bytes" in doc["error"]["message"]
    status, _ = http(server, "PUT", f"/api/resources/{rid}", b"x" * (8 * MAX_RESOURCE_BYTES),
                     {"If-Match": "0"})
    assert status == 413
    status, doc = put(server, rid, "\x01" * MAX_RESOURCE_BYTES, 0)
    assert status == 200 and doc["version"] == 1
    status, doc = http(server, "GET", f"/api/resources/{rid}?version=x")
    assert status == 400
    assert server.http("/api/resources")[0] == 401
    assert server.http(f"/api/resources/{rid}")[0] == 401


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
async def test_resources_survive_a_restart(start_server: ServerFactory, connect_as: Any,
                                           sig: signal.Signals) -> None:
    server = start_server()
    rid = unique("prompt")
    alice: Client = await connect_as("alice", on=server)
    await ws_put(alice, rid, "one", 0, project_id="acme")
    await ws_put(alice, rid, "two", 1)
    await alice.close()
    server.stop(sig)
    server.start()
    bob: Client = await connect_as("bob", on=server)
    old = await bob.request("resource_get", {"resource_id": rid, "version": 1})
    assert old["data"]["content"] == "one"
    stale = await ws_put(bob, rid, "three", 1)
    assert stale["data"]["code"] == "CONFLICT" and stale["data"]["current"]["version"] == 2
    made = await ws_put(bob, rid, "three", 2)
    assert made["data"]["version"] == 3 and made["data"]["project_id"] == "acme"
    server.stop()
