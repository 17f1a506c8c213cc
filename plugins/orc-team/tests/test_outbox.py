"""The team client's outbox, sender and sink: durable before the network, delivered once.

Real processes throughout: a writer killed with SIGKILL, real servers on loopback (down, up, or a
TCP listener that accepts and never answers), the real ``orc team sync`` and ``orc team outbox``
commands, and a WebSocket subscriber that counts what arrives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from orc_git.context import Context
from orc_git.publish import TaskEvent

from orc_team.client.outbox import FILE_NAME, Outbox
from orc_team.client.sender import Connections, Drainer, Sender
from orc_team.client.settings import ClientSettings
from orc_team.client.sink import OutboxSink, team_sink

from conftest import (
    WAIT,
    Client,
    Lines,
    LockerFactory,
    ServerProc,
    TeamContext,
    dead_url,
    run_orc,
    settings_for,
    token,
    unique,
)

NO_AUTOSYNC = {"ORC_TEAM_AUTOSYNC": "0"}


def events(task: str, n: int, project: str | None = None, start: int = 0) -> list[TaskEvent]:
    return [TaskEvent("task.transcript", task, {"role": "stdout", "content": f"line {i}"},
                      project) for i in range(start, start + n)]


def sink_for(local: Path, settings: ClientSettings, client: str | None = None) -> OutboxSink:
    """A sink built from its parts (for settings a config cannot give, e.g. a long timeout)."""
    cid = client or unique("alice-run")
    box = Outbox(local)
    return OutboxSink(box, Sender(Drainer(box, Connections(settings)), cid), cid, None)


def counts(local: Path) -> dict[str, int]:
    box = Outbox(local)
    try:
        return box.counts()
    finally:
        box.close()


def orc_json(*args: str, ctx: Context, **env: str) -> tuple[int, dict[str, Any], str]:
    done = run_orc(*args, "--json", cwd=ctx.repo.worktree, env={**NO_AUTOSYNC, **env})
    return done.returncode, json.loads(done.stdout), done.stderr


async def subscribed(connect_as: Any, project: str) -> Client:
    watcher: Client = await connect_as(unique("watcher"))
    reply = await watcher.request("subscribe", {"project_id": project})
    assert reply["type"] == "subscribed", reply
    return watcher


async def received(watcher: Client, n: int) -> list[dict[str, Any]]:
    """The next ``n`` published events the watcher gets, then proof that no more came (the
    server answers a ping after everything it sent before)."""
    got = [await watcher.event("task.transcript") for _ in range(n)]
    extra = [m for m in await watcher.barrier() if m.get("type") == "event"]
    assert extra == []
    return got


# -- durability ---------------------------------------------------------------------------------

WRITER = """
import json, sys, time
from pathlib import Path
from orc_team.client.outbox import Outbox
box = Outbox(Path(sys.argv[1]))
n = 0
while True:
    box.append([(f"e-{n}-{j}", "writer", time.time(), json.dumps({"n": n, "j": j}))
                for j in range(10)])
    n += 1
    print(n, flush=True)
"""


def test_appends_survive_kill_9_of_the_writer_whole(tmp_path: Path) -> None:
    local = tmp_path / "local"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(local)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    lines = Lines(proc.stdout)
    lines.wait_for("200\n")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=WAIT)
    committed = max(int(line) for line in lines.text.split())
    assert (local / FILE_NAME).stat().st_mode & 0o777 == 0o600  # it holds commands' output
    db = sqlite3.connect(local / FILE_NAME)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    rows = db.execute("SELECT count(*) FROM outbox WHERE state = 'pending'").fetchone()[0]
    db.close()
    assert rows >= committed * 10  # every append it reported is there ...
    assert rows % 10 == 0  # ... and each append is all there or not at all


COUNTED = """
import json, sys, time
from pathlib import Path
from orc_team.client.outbox import Outbox
box = Outbox(Path(sys.argv[1]))
for n in range(200):
    box.append([(f"{sys.argv[2]}-{n}-{j}", sys.argv[2], time.time(), json.dumps({"n": n}))
                for j in range(10)])
"""


def test_two_processes_append_at_once_and_nothing_is_lost(tmp_path: Path) -> None:
    local = tmp_path / "local"
    Outbox(local).close()  # created first: both writers then open an existing file
    writers = [subprocess.Popen([sys.executable, "-c", COUNTED, str(local), name])
               for name in ("a", "b")]
    assert [w.wait(timeout=WAIT * 6) for w in writers] == [0, 0]
    box = Outbox(local)
    rows = box.pending(10_000)
    box.close()
    assert len(rows) == 4000
    for name in ("a", "b"):
        mine = [row.event_id for row in rows if row.client == name]
        assert mine == [f"{name}-{n}-{j}" for n in range(200) for j in range(10)]


# -- delivery -----------------------------------------------------------------------------------


async def test_server_down_then_sync_delivers_every_event_once(
        server: ServerProc, team_context: TeamContext, connect_as: Any) -> None:
    ctx = team_context(dead_url(), "alice")
    task, project = unique("OUT"), unique("proj")
    sink = team_sink(ctx)
    made = events(task, 250, project)
    for i in range(0, 250, 50):  # one call per pipe read: 50 lines each
        sink.publish(made[i:i + 50])
    sink.close(0.1)
    local = ctx.repo.local_dir
    assert counts(local) == {"pending": 250, "rejected": 0}
    code, shown, _ = orc_json("team", "outbox", "--limit", "3", ctx=ctx)
    assert code == 0 and shown["pending"] == 250 and len(shown["events"]) == 3
    assert [e["event_id"] for e in shown["events"]] == [e.event_id for e in made[:3]]

    before = tmp_copy = local.parent / "outbox-before-sync.sqlite3"
    shutil.copy(local / FILE_NAME, tmp_copy)
    watcher = await subscribed(connect_as, project)
    url = {"ORC_TEAM_URL": f"ws://{server.base}"}
    code, result, err = await asyncio.to_thread(orc_json, "team", "sync", ctx=ctx, **url)
    assert (code, result["delivered"], result["pending"]) == (0, 250, 0), err
    got = await received(watcher, 250)
    assert [e["event_id"] for e in got] == [e.event_id for e in made]  # oldest first
    offsets = [e["offset"] for e in got]
    assert offsets == sorted(offsets) and len(set(offsets)) == 250
    assert counts(local) == {"pending": 0, "rejected": 0}

    # The same events sent again (an outbox restored from before the sync, as a connection
    # cut before the acks would leave it): delivered as duplicates, seen by nobody twice.
    shutil.copy(before, local / FILE_NAME)
    for suffix in ("-wal", "-shm"):
        (local / f"{FILE_NAME}{suffix}").unlink(missing_ok=True)
    code, result, err = await asyncio.to_thread(orc_json, "team", "sync", ctx=ctx, **url)
    assert (code, result["delivered"], result["pending"]) == (0, 250, 0), err
    assert [m for m in await watcher.barrier() if m.get("type") == "event"] == []
    code, result, _ = await asyncio.to_thread(orc_json, "team", "sync", ctx=ctx, **url)
    assert (code, result["delivered"], result["pending"]) == (0, 0, 0)


async def test_the_sink_delivers_in_the_background_while_the_server_is_up(
        server: ServerProc, team_context: TeamContext, connect_as: Any) -> None:
    ctx = team_context(server, "alice")
    task, project = unique("LIVE"), unique("proj")
    watcher = await subscribed(connect_as, project)
    sink = team_sink(ctx)
    made = events(task, 30, project)
    sink.publish(made[:10])
    first = [await watcher.event("task.transcript") for _ in range(10)]  # no close needed
    sink.publish(made[10:])
    sink.close(WAIT)
    rest = await received(watcher, 20)
    assert [e["event_id"] for e in first + rest] == [e.event_id for e in made]
    assert counts(ctx.repo.local_dir)["pending"] == 0


async def test_a_run_made_offline_is_delivered_after_another_holder_took_the_task(
        server: ServerProc, team_context: TeamContext, make_locker: LockerFactory) -> None:
    """Alice's run went on offline; Bob took the task on the server since: her events arrive
    as history (``holder: false``), none rejected."""
    task = unique("OFFLINE")
    ctx = team_context(dead_url(), "alice")
    sink = team_sink(ctx)
    sink.publish(events(task, 3))
    sink.close(0.1)
    make_locker(server, "bob").acquire(task)
    url = {"ORC_TEAM_URL": f"ws://{server.base}"}
    code, result, err = await asyncio.to_thread(orc_json, "team", "sync", ctx=ctx, **url)
    assert (code, result["delivered"], result["rejected"], result["pending"]) == (0, 3, 0, 0), err


async def test_rejected_entries_are_final_and_shown(
        server: ServerProc, team_context: TeamContext, make_locker: LockerFactory) -> None:
    task = unique("THEIRS")
    bob = make_locker(server, "bob")
    bob.acquire(task)  # only bob's holder may publish about it while he holds it
    ctx = team_context(dead_url(), "alice")
    sink = team_sink(ctx)
    sink.publish(events(task, 2) + events(unique("MINE"), 1))
    sink.close(0.1)
    url = {"ORC_TEAM_URL": f"ws://{server.base}"}
    code, result, err = await asyncio.to_thread(orc_json, "team", "sync", ctx=ctx, **url)
    assert (code, result["delivered"], result["rejected"], result["pending"]) == (0, 1, 2, 0), err
    code, shown, _ = orc_json("team", "outbox", ctx=ctx)
    assert (shown["pending"], shown["rejected"]) == (0, 2)
    assert {e["error"]["code"] for e in shown["events"]} == {"FORBIDDEN"}
    assert all(e["state"] == "rejected" and e["task_id"] == task for e in shown["events"])
    text = run_orc("team", "outbox", cwd=ctx.repo.worktree, env=NO_AUTOSYNC)
    assert text.returncode == 0 and "FORBIDDEN" in text.stdout and "2 rejected" in text.stderr
    code, result, _ = await asyncio.to_thread(orc_json, "team", "sync", ctx=ctx, **url)
    assert (code, result["delivered"], result["pending"]) == (0, 0, 0)  # not sent again


async def test_a_later_command_that_connects_delivers_the_backlog(
        server: ServerProc, team_context: TeamContext, connect_as: Any) -> None:
    ctx = team_context(dead_url(), "alice")
    task, project = unique("LATER"), unique("proj")
    sink = team_sink(ctx)
    made = events(task, 5, project)
    sink.publish(made)
    sink.close(0.1)
    watcher = await subscribed(connect_as, project)
    lease = unique("LEASE")
    done = await asyncio.to_thread(run_orc, "lock", "acquire", lease, cwd=ctx.repo.worktree,
                                   env={"ORC_TEAM_URL": f"ws://{server.base}"})
    assert done.returncode == 0, done.stderr
    got = [await watcher.event("task.transcript") for _ in range(5)]
    assert [e["event_id"] for e in got] == [e.event_id for e in made]


async def test_presence_goes_over_the_senders_connection(
        server: ServerProc, team_context: TeamContext, connect_as: Any) -> None:
    watcher: Client = await connect_as(unique("watcher"))
    await watcher.request("ping")
    ctx = team_context(server, "alice")
    sink = team_sink(ctx)
    task = unique("ACTIVE")
    sink.presence("active", task)
    seen = await watcher.presence("alice", "active")
    assert seen["active_task"] == task
    sink.presence("online", None)
    assert (await watcher.presence("alice", "online"))["active_task"] is None
    sink.close(1.0)


# -- a server that accepts and never answers ------------------------------------------------------


class Silent:
    """A TCP listener that accepts connections and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.accepted = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    s = Silent()
    yield s
    s.close()


def test_a_server_that_never_answers_never_holds_up_publishing(
        silent: Silent, team_context: TeamContext) -> None:
    ctx = team_context(silent.url, "alice")
    local = ctx.repo.local_dir
    # the sender waits up to 30 s for the handshake: publishing must not wait with it
    sink = sink_for(local, settings_for(silent.url, "alice", open_timeout=30.0))
    sink.publish(events("HANG-1", 1))
    assert silent.accepted.wait(WAIT)  # the sender is now stuck in the handshake
    for i in range(20):
        sink.publish(events("HANG-1", 10, start=1 + 10 * i))
    assert counts(local)["pending"] == 201
    sink.close(0.2)  # returns: the stuck sender is left behind, the events stay queued
    assert counts(local)["pending"] == 201

    code, result, _ = orc_json("team", "sync", "--timeout", "20", ctx=ctx)
    assert code == 3 and result["error"]["code"] == "UNAVAILABLE"
    message = result["error"]["message"]
    assert "timed out" in message and "201 events stay in the outbox" in message, message
    done = run_orc("team", "sync", cwd=ctx.repo.worktree, env=NO_AUTOSYNC)
    assert done.returncode == 3 and "orc: error:" in done.stderr and "timed out" in done.stderr


def test_sync_with_the_server_down_says_so(team_context: TeamContext) -> None:
    ctx = team_context(dead_url(), "alice")
    sink = team_sink(ctx)
    sink.publish(events("DOWN-1", 3))
    sink.close(0.1)
    done = run_orc("team", "sync", cwd=ctx.repo.worktree, env=NO_AUTOSYNC)
    assert done.returncode == 3
    assert "cannot reach the team server" in done.stderr
    assert "3 events stay in the outbox" in done.stderr and "Traceback" not in done.stderr


# -- faults of the outbox itself ----------------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "orc_git.team" and r.levelno >= logging.WARNING]


def test_a_corrupt_outbox_is_moved_aside_and_a_fresh_one_used(
        team_context: TeamContext, caplog: pytest.LogCaptureFixture) -> None:
    ctx = team_context(dead_url(), "alice")
    local = ctx.repo.local_dir
    local.mkdir(parents=True)
    garbage = b"this is not a database\n" * 100
    (local / FILE_NAME).write_bytes(garbage)
    caplog.set_level(logging.WARNING, "orc_git.team")
    sink = team_sink(ctx)
    sink.publish(events("CORRUPT-1", 2))
    sink.publish(events("CORRUPT-1", 3, start=2))
    sink.close(0.1)
    told = _warnings(caplog)
    assert len(told) == 1 and "corrupt" in told[0] and "moved aside" in told[0], told
    aside = list(local.glob(f"{FILE_NAME}.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == garbage
    assert counts(local) == {"pending": 5, "rejected": 0}


def test_orc_team_outbox_on_a_corrupt_file_says_so_once(team_context: TeamContext) -> None:
    ctx = team_context(dead_url(), "alice")
    local = ctx.repo.local_dir
    local.mkdir(parents=True)
    (local / FILE_NAME).write_bytes(b"\x00garbage" * 1000)
    code, shown, err = orc_json("team", "outbox", ctx=ctx)
    assert code == 0 and shown["pending"] == 0
    assert err.count("moved aside") == 1 and "Traceback" not in err


def test_an_unwritable_outbox_keeps_events_in_memory_and_says_what_is_lost(
        team_context: TeamContext, caplog: pytest.LogCaptureFixture) -> None:
    ctx = team_context(dead_url(), "alice")
    local = ctx.repo.local_dir
    local.parent.mkdir(parents=True)
    local.write_text("a file where the directory belongs\n")  # root ignores chmod
    caplog.set_level(logging.WARNING, "orc_git.team")
    sink = team_sink(ctx)
    for i in range(3):
        sink.publish(events("RO-1", 2, start=2 * i))  # never raises
    assert sink.outbox.in_memory and sink.outbox.counts()["pending"] == 6
    sink.close(0.1)
    told = _warnings(caplog)
    assert len(told) == 2, told
    assert "cannot write the outbox" in told[0] and "memory" in told[0]
    assert "6 events could not be delivered" in told[1]


async def test_an_unwritable_outbox_still_delivers_from_memory(
        server: ServerProc, team_context: TeamContext, connect_as: Any) -> None:
    ctx = team_context(server, "alice")
    local = ctx.repo.local_dir
    local.parent.mkdir(parents=True)
    local.write_text("not a directory\n")
    project = unique("proj")
    watcher = await subscribed(connect_as, project)
    sink = team_sink(ctx)
    made = events(unique("MEM"), 4, project)
    sink.publish(made)
    sink.close(WAIT)
    got = await received(watcher, 4)
    assert [e["event_id"] for e in got] == [e.event_id for e in made]


async def test_a_backlog_goes_at_the_servers_rate_limit_without_losing_any(
        start_server: Any, team_context: TeamContext) -> None:
    slow = start_server("--rate", "5", "--burst", "3")  # 2,000 events are 10 batches
    ctx = team_context(dead_url(), "alice")
    task, project = unique("RATE"), unique("proj")
    sink = team_sink(ctx)
    made = events(task, 2000, project)
    for i in range(0, 2000, 500):
        sink.publish(made[i:i + 500])
    sink.close(0.1)
    code, result, err = await asyncio.to_thread(orc_json, "team", "sync", ctx=ctx,
                                                ORC_TEAM_URL=f"ws://{slow.base}")
    assert (code, result["delivered"], result["pending"]) == (0, 2000, 0), err
    stored: list[dict[str, Any]] = []
    while len(stored) < 2000:
        since = stored[-1]["offset"] if stored else 0
        status, page = slow.http(f"/api/events?project={project}&since={since}&limit=1000",
                                 token=token("alice"))
        assert status == 200 and page["events"], page
        stored += page["events"]
    assert [e["event_id"] for e in stored] == [e.event_id for e in made]


async def test_an_event_too_large_for_any_message_is_rejected_alone(
        server: ServerProc, team_context: TeamContext) -> None:
    ctx = team_context(dead_url(), "alice")
    task = unique("BIG")
    sink = team_sink(ctx)
    huge = TaskEvent("task.phase", task, {"phase": "plan", "notes": "x" * 100_000})
    sink.publish([*events(task, 1), huge, *events(task, 1, start=1)])
    sink.close(0.1)
    code, result, err = await asyncio.to_thread(orc_json, "team", "sync", ctx=ctx,
                                                ORC_TEAM_URL=f"ws://{server.base}")
    assert (code, result["delivered"], result["rejected"], result["pending"]) == (0, 2, 1, 0), err
    _, shown, _ = orc_json("team", "outbox", ctx=ctx)
    assert [e["event_id"] for e in shown["events"]] == [huge.event_id]
    assert shown["events"][0]["error"]["code"] == "MESSAGE_TOO_LARGE"


HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")  # the write lock, held until this process ends
print("holding", flush=True)
sys.stdin.read()
"""


def test_a_writer_stuck_mid_transaction_does_not_stop_publishing(
        team_context: TeamContext, caplog: pytest.LogCaptureFixture) -> None:
    ctx = team_context(dead_url(), "alice")
    local = ctx.repo.local_dir
    first = team_sink(ctx)
    first.publish(events("STUCK-1", 1))  # creates the outbox
    first.close(0.0)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(local / FILE_NAME)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        caplog.set_level(logging.WARNING, "orc_git.team")
        sink = team_sink(ctx)
        sink.publish(events("STUCK-1", 3, start=1))  # waits out the busy timeout once
        sink.publish(events("STUCK-1", 3, start=4))
        assert sink.outbox.in_memory and sink.outbox.counts()["pending"] == 6
        told = _warnings(caplog)
        assert len(told) == 1 and "locked" in told[0] and "memory" in told[0], told
        sink.close(0.0)
    finally:
        holder.kill()
        holder.wait(timeout=WAIT)
    assert counts(local)["pending"] == 1  # the file's own rows are untouched


async def test_a_server_restarted_mid_run_gets_every_event_once(
        start_server: Any, team_context: TeamContext, connect_as: Any) -> None:
    own = start_server()
    ctx = team_context(own, "alice")
    task, project = unique("RESTART"), unique("proj")
    watcher: Client = await connect_as(unique("watcher"), on=own)
    assert (await watcher.request("subscribe", {"project_id": project}))["type"] == "subscribed"
    sink = team_sink(ctx)
    made = events(task, 300, project)
    sink.publish(made[:100])
    for _ in range(100):  # delivered while it is up
        await watcher.event("task.transcript")
    own.stop(signal.SIGKILL)
    sink.publish(made[100:200])  # while it is down
    own.start()  # same port, same store
    sink.publish(made[200:])
    await asyncio.to_thread(sink.close, WAIT * 2)  # the sender's backoff is at most 5 s
    assert counts(ctx.repo.local_dir)["pending"] == 0
    stored: list[dict[str, Any]] = []
    while True:
        since = stored[-1]["offset"] if stored else 0
        status, page = own.http(f"/api/events?project={project}&since={since}&limit=1000",
                                token=token("alice"))
        assert status == 200
        if not page["events"]:
            break
        stored += page["events"]
    assert [e["event_id"] for e in stored] == [e.event_id for e in made]


async def test_events_of_many_runs_interleaved_are_delivered_each_in_order(
        server: ServerProc, team_context: TeamContext) -> None:
    ctx = team_context(dead_url(), "alice")
    project = unique("proj")
    dead = settings_for(dead_url(), "alice")
    runs = [(unique("MANY"), sink_for(ctx.repo.local_dir, dead)) for _ in range(6)]  # > 4
    made: dict[str, list[str]] = {task: [] for task, _ in runs}
    for i in range(20):
        for task, sink in runs:  # six runs at once, their lines interleaved in the outbox
            batch = events(task, 3, project, start=3 * i)
            sink.publish(batch)
            made[task] += [e.event_id for e in batch]
    for _, sink in runs:
        sink.close(0.0)
    code, result, err = await asyncio.to_thread(orc_json, "team", "sync", ctx=ctx,
                                                ORC_TEAM_URL=f"ws://{server.base}")
    assert (code, result["delivered"], result["pending"]) == (0, 360, 0), err
    stored: list[dict[str, Any]] = []
    while len(stored) < 360:
        since = stored[-1]["offset"] if stored else 0
        status, page = server.http(f"/api/events?project={project}&since={since}&limit=1000",
                                   token=token("alice"))
        assert status == 200 and page["events"], page
        stored += page["events"]
    for task, ids in made.items():
        assert [e["event_id"] for e in stored if e["task_id"] == task] == ids
