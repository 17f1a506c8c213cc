"""Shared resources on a real server: versions, conflicts, bad input, events, restarts."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from orc_team import protocol
from orc_team.feed import event_line
from orc_team.protocol import MAX_RESOURCE_BYTES, Resource
from orc_team.textmerge import has_markers, three_way

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


def test_the_resource_shape_round_trips_and_reads_leniently() -> None:
    made = Resource("r-1", 3, "text\n", "alice", "2026-01-01T00:00:00.000Z", "acme")
    data = protocol.decode(protocol.encode(made.to_json()))
    assert list(data) == ["resource_id", "version", "content", "updated_by", "updated_at",
                          "project_id"]
    assert Resource.from_json(data) == made
    listed = Resource("r-1", 3, None, "alice", None).to_json()
    assert "content" not in listed and Resource.from_json(listed).content is None
    odd = Resource.from_json({"resource_id": "r", "version": True, "content": 5})
    assert (odd.version, odd.content, odd.updated_by) == (0, None, None)
    err = protocol.error(1, protocol.CONFLICT, "stale", {"current": data,
                                                         "expected_version": 2})
    assert err["data"]["current"] == data and err["data"]["code"] == "CONFLICT"
    assert protocol.REPLY_TYPES["resource_put"] == "resource"
    assert protocol.RESOURCE_UPDATED.startswith(protocol.RESERVED_EVENT_PREFIXES)


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


async def test_of_writers_racing_from_one_version_exactly_one_wins(
        server: ServerProc, connect_as: Any) -> None:
    rid = unique("race")
    writers: list[Client] = [await connect_as(f"user{i}") for i in range(8)]
    await ws_put(writers[0], rid, "base", 0)
    replies = await asyncio.gather(*(ws_put(w, rid, f"from {w.user}", 1) for w in writers))
    won = [r for r in replies if r["type"] == "resource"]
    assert len(won) == 1 and won[0]["data"]["version"] == 2
    lost = [r["data"] for r in replies if r["type"] == "error"]
    assert len(lost) == 7 and {d["code"] for d in lost} == {"CONFLICT"}
    assert all(d["current"] == won[0]["data"] for d in lost)
    # HTTP and the WebSocket share the one version check.
    status, doc = put(server, rid, "over http", 1, user="bob")
    assert status == 409 and doc["error"]["current"]["version"] == 2
    assert put(server, rid, "over http", 2, user="bob")[0] == 200
    stale = await ws_put(writers[0], rid, "late", 2)
    assert stale["data"]["code"] == "CONFLICT"
    assert stale["data"]["current"]["content"] == "over http"


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
    line = event_line(event)
    assert "Alice" in line and f"saved resource {rid} version 1  ({project})" in line
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


# -- the three-way merge --------------------------------------------------------------------

BASE = "intro\nalpha\nbeta\ngamma\nend\n"


def test_three_way_merge_without_overlap_is_clean() -> None:
    mine = BASE.replace("alpha", "alpha (mine)")
    theirs = BASE.replace("gamma", "gamma (theirs)")
    merged, conflicts = three_way(BASE, mine, theirs)
    assert conflicts == 0
    assert merged == "intro\nalpha (mine)\nbeta\ngamma (theirs)\nend\n"
    assert not has_markers(merged)


def test_three_way_merge_with_overlap_leaves_markers() -> None:
    mine = BASE.replace("beta", "beta (mine)")
    theirs = BASE.replace("beta", "beta (theirs)")
    merged, conflicts = three_way(BASE, mine, theirs, "theirs (version 2)")
    assert conflicts == 1
    assert "<<<<<<< mine\nbeta (mine)\n=======\nbeta (theirs)\n>>>>>>> theirs (version 2)\n" \
        in merged
    assert has_markers(merged)
    assert not has_markers("a line with ======= inside\n<<<<<<<not a marker\n")


# -- the CLI --------------------------------------------------------------------------------

EDITOR = '''
import json, os, sys, urllib.request
from pathlib import Path

path = Path(sys.argv[1])
state = Path(os.environ["EDIT_STATE"])
n = int(state.read_text()) if state.exists() else 0
state.write_text(str(n + 1))
Path(f"{state}.seen{n}").write_bytes(path.read_bytes())
steps = json.loads(os.environ["EDIT_STEPS"])
step = steps[min(n, len(steps) - 1)]
theirs = step.get("theirs")
if theirs is not None:  # someone else saves while this editor is open
    request = urllib.request.Request(
        os.environ["EDIT_URL"], method="PUT",
        data=json.dumps({"content": theirs["content"]}).encode(),
        headers={"Authorization": "Bearer " + os.environ["EDIT_TOKEN"],
                 "If-Match": str(theirs["version"]), "Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=5).read()
text = path.read_text()
for old, new in step.get("replace", []):
    text = text.replace(old, new)
if "write" in step:
    text = step["write"]
path.write_text(text)
sys.exit(step.get("exit", 0))
'''


class Cli:
    """``orc resource ...`` as alice, in a directory that is no repository, with an editor
    that follows ``steps`` (one per time it is opened; the last repeats)."""

    def __init__(self, server: ServerProc, tmp: Path, rid: str) -> None:
        self.server, self.tmp, self.rid = server, tmp, rid
        script = tmp / "editor.py"
        script.write_text(EDITOR)
        self.state = tmp / "edit-state"
        self.env = {**os.environ, "ORC_HOME": str(tmp / "home"),
                    "ORC_TEAM_URL": f"ws://{server.base}", "ORC_TEAM_TOKEN": token("alice"),
                    "VISUAL": "", "EDITOR": f"{sys.executable} {script}",
                    "EDIT_STATE": str(self.state), "EDIT_STEPS": "[]",
                    "EDIT_URL": f"http://{server.base}/api/resources/{rid}",
                    "EDIT_TOKEN": token("bob")}
        self.env.pop("NO_COLOR", None)
        self.env.pop("ORC_MODE", None)

    def steps(self, *steps: dict[str, Any]) -> None:
        self.env["EDIT_STEPS"] = json.dumps(list(steps))

    def seen(self, n: int) -> str:
        """What the editor was given the ``n``-th time it was opened (from 0)."""
        return Path(f"{self.state}.seen{n}").read_text()

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "orc_git", "resource", *args],
                              cwd=self.tmp, env=self.env, input=stdin, text=True,
                              capture_output=True, timeout=30)

    def current(self) -> dict[str, Any]:
        status, doc = http(self.server, "GET", f"/api/resources/{self.rid}")
        assert status == 200, doc
        return dict(doc)


def one_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert "Traceback" not in proc.stderr, proc.stderr
    [line] = proc.stdout.splitlines()
    doc: dict[str, Any] = json.loads(line)
    assert doc["schema"] == 1 and "mode" in doc
    return doc


@pytest.fixture
def cli(server: ServerProc, tmp_path: Path) -> Cli:
    return Cli(server, tmp_path, unique("prompt"))


def test_cli_put_get_list(cli: Cli, tmp_path: Path) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_bytes("first\r\nno newline at the end: ünï".encode())
    made = cli.run("put", cli.rid, str(doc), "--version", "0")
    assert made.returncode == 0, made.stderr
    assert f"saved {cli.rid} version 1" in made.stderr
    got = subprocess.run([sys.executable, "-m", "orc_git", "resource", "get", cli.rid],
                         cwd=cli.tmp, env=cli.env, capture_output=True, timeout=30)
    assert got.returncode == 0 and got.stdout == doc.read_bytes()
    assert b"version 1 by alice" in got.stderr
    second = cli.run("put", cli.rid, "-", "--version", "1", "--json", stdin="second\n")
    out = one_json(second)
    assert second.returncode == 0 and out["saved"] is True
    assert out["resource"]["version"] == 2 and out["resource"]["content"] == "second\n"
    old = one_json(cli.run("get", cli.rid, "--version", "1", "--json"))
    assert old["resource"]["content"].startswith("first\r\n")
    listed = one_json(cli.run("list", "--json"))
    [entry] = [r for r in listed["resources"] if r["resource_id"] == cli.rid]
    assert entry["version"] == 2 and "content" not in entry
    rows = cli.run("list").stdout.splitlines()
    assert any(row.split("\t")[:3] == [cli.rid, "2", "alice"] for row in rows)


def test_cli_refusals_and_their_exit_codes(cli: Cli, tmp_path: Path) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text("x\n")
    assert cli.run("put", cli.rid, str(doc), "--version", "0").returncode == 0
    stale = cli.run("put", cli.rid, "-", "--version", "0", "--json", stdin="mine\n")
    assert stale.returncode == 1
    out = one_json(stale)
    assert out["error"]["code"] == "CONFLICT"
    assert out["current"]["content"] == "x\n" and out["current"]["version"] == 1
    assert out["mine"] == {"resource_id": cli.rid, "base_version": 0, "content": "mine\n"}
    missing = cli.run("get", unique("none"), "--json")
    assert missing.returncode == 1 and one_json(missing)["error"]["code"] == "NOT_FOUND"
    ahead = cli.run("put", unique("none"), str(doc), "--version", "4", "--json")
    assert ahead.returncode == 1 and one_json(ahead)["error"]["code"] == "NOT_FOUND"
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * (MAX_RESOURCE_BYTES + 1))
    too_big = cli.run("put", cli.rid, str(big), "--version", "1", "--json")
    assert too_big.returncode == 2 and one_json(too_big)["error"]["code"] == "INVALID_INPUT"
    binary = tmp_path / "bin"
    binary.write_bytes(b"\xff\xfe")
    not_text = cli.run("put", cli.rid, str(binary), "--version", "1")
    assert not_text.returncode == 2 and "not UTF-8" in not_text.stderr
    for bad in (["get", "../x"], ["put", cli.rid, str(doc)], ["get", cli.rid, "--version", "0"]):
        refused = cli.run(*bad)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, bad
    assert cli.current()["version"] == 1


def test_cli_edit_saves_against_the_version_it_started_from(cli: Cli) -> None:
    cli.steps({"write": "created in the editor\n"})
    created = cli.run("edit", cli.rid)
    assert created.returncode == 0, created.stderr
    assert "does not exist yet" in created.stderr and cli.seen(0) == ""
    cli.state.unlink()
    cli.steps({"replace": [["created", "changed"]]})
    changed = one_json(cli.run("edit", cli.rid, "--json"))
    assert changed["saved"] is True and changed["resource"]["version"] == 2
    assert cli.seen(0) == "created in the editor\n"
    assert cli.current()["content"] == "changed in the editor\n"
    cli.state.unlink()
    cli.steps({})
    same = cli.run("edit", cli.rid)
    assert same.returncode == 0 and "no changes: nothing saved" in same.stderr
    assert cli.current()["version"] == 2
    cli.steps({"exit": 3, "write": "half done"})
    failed = cli.run("edit", cli.rid)
    assert failed.returncode == 3 and "exited with status 3" in failed.stderr
    left = Path(failed.stderr.split("your text is in ")[1].split()[0])
    assert left.read_text() == "half done"
    left.unlink()
    cli.steps({"write": "y" * (MAX_RESOURCE_BYTES + 1)})
    too_big = cli.run("edit", cli.rid)
    assert too_big.returncode == 2 and "at most 65536" in too_big.stderr
    kept = Path(too_big.stderr.split("your text is in ")[1].split()[0])
    assert kept.stat().st_size == MAX_RESOURCE_BYTES + 1
    kept.unlink()
    assert cli.current()["version"] == 2


def test_cli_edit_conflict_without_a_terminal_keeps_both(cli: Cli) -> None:
    put(cli.server, cli.rid, BASE, 0)
    cli.steps({"theirs": {"version": 1, "content": "theirs\n"},
               "replace": [["alpha", "alpha (mine)"]]})
    proc = cli.run("edit", cli.rid, "--json")
    assert proc.returncode == 1
    out = one_json(proc)
    assert out["error"]["code"] == "CONFLICT" and out["expected_version"] == 1
    assert out["current"]["content"] == "theirs\n" and out["current"]["updated_by"] == "bob"
    assert out["mine"]["content"] == BASE.replace("alpha", "alpha (mine)")
    assert Path(out["kept_in"]).read_text() == out["mine"]["content"]
    Path(out["kept_in"]).unlink()
    cli.state.unlink()  # the next edit starts from version 2; bob saves version 3 meanwhile
    cli.steps({"theirs": {"version": 2, "content": "theirs again\n"}, "write": "mine\n"})
    plain = cli.run("edit", cli.rid)
    assert plain.returncode == 1 and "Your choice" not in plain.stderr
    kept = plain.stderr.split("your text is kept in ")[1].split()[0]
    assert Path(kept).read_text() == "mine\n"
    Path(kept).unlink()
    assert cli.current()["content"] == "theirs again\n"


# -- the dialog on a terminal ---------------------------------------------------------------

ESC = "\x1b"
CHOICE = "Your choice [d/t/m/g/q]:"


class Tty:
    """The master end of a pty, read with a deadline."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = b""

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")

    def until(self, needle: str, count: int = 1, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while self.text.count(needle) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {needle!r} within {timeout} s: {self.text!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # EIO: the child closed its end
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"output ended before {needle!r}: {self.text!r}")
                self.data += chunk
        return self.text

    def send(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\n")


@contextmanager
def on_tty(cli: Cli, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], Tty]]:
    """``orc resource ARGS`` with stdin, stdout and stderr on one pty: a person typing."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "orc_git", "resource", *args], cwd=cli.tmp,
                            env=cli.env, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    try:
        yield proc, Tty(master)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        os.close(master)


def conflicted(cli: Cli, theirs: str, mine: list[list[str]]) -> None:
    """Version 1 is BASE; the edit changes ``mine`` while bob saves ``theirs`` as version 2."""
    assert put(cli.server, cli.rid, BASE, 0)[0] == 200
    cli.steps({"theirs": {"version": 1, "content": theirs}, "replace": mine})


def test_tty_view_diff_then_use_theirs(cli: Cli) -> None:
    theirs = BASE.replace("gamma", "gamma (theirs)")
    conflicted(cli, theirs, [["alpha", "alpha (mine)"]])
    with on_tty(cli, "edit", cli.rid) as (proc, tty):
        text = tty.until(CHOICE)
        assert f"conflict: {cli.rid} was modified by bob " in text
        assert "ago (now version 2; you started from version 1)" in text
        for choice in ("[d] view diff", "[t] use theirs", "[m] use mine", "[g] merge"):
            assert choice in text
        tty.send("x")  # not a choice: asked again
        tty.until(CHOICE, count=2)
        tty.send("d")
        text = tty.until(CHOICE, count=3)
        assert f"{ESC}[32m+alpha (mine)" in text and f"{ESC}[31m-alpha" in text
        assert f"{ESC}[31m-gamma (theirs)" in text
        assert "--- theirs (version 2)" in text
        tty.send("t")
        text = tty.until("your changes were discarded")
        assert proc.wait(20) == 0
    assert cli.current()["version"] == 2 and cli.current()["content"] == theirs


def test_tty_use_mine_saves_over_the_new_version(cli: Cli) -> None:
    conflicted(cli, "theirs\n", [["alpha", "alpha (mine)"]])
    cli.env["NO_COLOR"] = "1"
    with on_tty(cli, "edit", cli.rid) as (proc, tty):
        tty.until(CHOICE)
        tty.send("d")
        text = tty.until(CHOICE, count=2)
        assert "+alpha (mine)" in text and "-theirs" in text and ESC + "[3" not in text
        tty.send("m")
        tty.until(f"saved {cli.rid} version")
        assert proc.wait(20) == 0
    now = cli.current()
    assert now["version"] == 3 and now["content"] == BASE.replace("alpha", "alpha (mine)")


def test_tty_merge_without_overlap_saves_both_changes(cli: Cli) -> None:
    conflicted(cli, BASE.replace("gamma", "gamma (theirs)"), [["alpha", "alpha (mine)"]])
    with on_tty(cli, "edit", cli.rid) as (proc, tty):
        tty.until(CHOICE)
        tty.send("g")
        text = tty.until("(merge)")
        assert "merged cleanly with version 2" in text
        assert proc.wait(20) == 0
    now = cli.current()
    assert now["version"] == 3 and now["updated_by"] == "alice"
    assert now["content"] == "intro\nalpha (mine)\nbeta\ngamma (theirs)\nend\n"


def test_tty_merge_with_overlap_goes_through_the_editor(cli: Cli) -> None:
    """Conflicts open the editor on the markers; saving is refused while any remain; the
    resolved text is saved against the version merged with, and when that conflicts again
    (bob saved once more) the dialog comes back."""
    conflicted(cli, BASE.replace("beta", "beta (theirs)"), [["beta", "beta (mine)"]])
    resolved = BASE.replace("beta", "beta (both)")
    cli.env["EDIT_STEPS"] = json.dumps([
        {"theirs": {"version": 1, "content": BASE.replace("beta", "beta (theirs)")},
         "replace": [["beta", "beta (mine)"]]},
        {},  # opened on the merge: left with its markers
        {"theirs": {"version": 2, "content": "bob again\n"}, "write": resolved},
    ])
    with on_tty(cli, "edit", cli.rid) as (proc, tty):
        tty.until(CHOICE)
        tty.send("g")
        text = tty.until("[e] edit again")
        assert "1 conflict(s) merging with version 2" in text
        assert "conflict markers remain: not saved" in text
        tty.send("e")
        text = tty.until(CHOICE, count=2)
        assert "(now version 3; you started from version 2)" in text
        tty.send("m")
        tty.until(f"saved {cli.rid} version")
        assert proc.wait(20) == 0
    merge = cli.seen(1)
    assert "<<<<<<< mine\nbeta (mine)\n=======\nbeta (theirs)\n>>>>>>> theirs (version 2)" \
        in merge
    assert cli.seen(2) == merge
    now = cli.current()
    assert now["version"] == 4 and now["content"] == resolved


def test_tty_end_of_input_gives_up_and_keeps_the_text(cli: Cli) -> None:
    conflicted(cli, "theirs\n", [["alpha", "alpha (mine)"]])
    with on_tty(cli, "edit", cli.rid) as (proc, tty):
        tty.until(CHOICE)
        os.write(tty.fd, b"\x04")  # Ctrl-D
        text = tty.until("nothing was saved")
        assert proc.wait(20) == 1
    kept = text.split("your text is kept in ")[1].split()[0]
    assert Path(kept).read_text() == BASE.replace("alpha", "alpha (mine)")
    Path(kept).unlink()
    assert cli.current()["version"] == 2
