"""``orc run`` in team mode through the outbox: what a subscriber sees, live and after a crash."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from orc_git.context import Context

from orc_team.client.outbox import Outbox

from conftest import WAIT, Client, Lines, ServerProc, TeamContext, dead_url, run_orc, unique

NO_AUTOSYNC = {"ORC_TEAM_AUTOSYNC": "0"}
CHATTY = ("import itertools\nfor i in itertools.count(1):\n"
          "    print(f'line {i}', '.' * 90, flush=True)\n")
PAD = " " + "." * 90
WAITS = "print('ready', flush=True)\ninput()\nprint('done', flush=True)\n"


def orc_popen(*args: str, cwd: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "orc_git", *args], cwd=cwd,
                            env={**os.environ, **NO_AUTOSYNC, **env}, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


async def watch(connect_as: Any, project: str) -> Client:
    watcher: Client = await connect_as(unique("watcher"))
    assert (await watcher.request("subscribe", {"project_id": project}))["type"] == "subscribed"
    return watcher


async def published(watcher: Client, until: str, task: str) -> list[dict[str, Any]]:
    """The task's published events (not lock.*) up to and including ``until``."""
    got: list[dict[str, Any]] = []
    while not got or got[-1]["event_type"] != until:
        message = await watcher.expect(lambda m: m.get("type") == "event"
                                       and m["data"]["task_id"] == task
                                       and not m["data"]["event_type"].startswith("lock."))
        got.append(message["data"])
    return got


async def every_event(watcher: Client, until: str, task: str) -> list[dict[str, Any]]:
    """The task's events, lock.* included, in the order received, up to ``until``."""
    got: list[dict[str, Any]] = []
    while not got or got[-1]["event_type"] != until:
        message = await watcher.expect(lambda m: m.get("type") == "event"
                                       and m["data"]["task_id"] == task)
        got.append(message["data"])
    return got


async def test_orc_run_publishes_through_the_outbox(
        server: ServerProc, team_context: TeamContext, connect_as: Any) -> None:
    ctx = team_context(server, "alice")
    task, project = unique("RUN"), unique("proj")
    watcher = await watch(connect_as, project)
    proc = orc_popen("run", task, "--project", project, "--", sys.executable, "-c", WAITS,
                     cwd=ctx.repo.worktree)
    assert proc.stdout is not None and proc.stdin is not None
    out = Lines(proc.stdout)
    out.wait_for("ready")
    seen = await watcher.presence("alice", "active")  # while CMD runs
    assert seen["active_task"] == task
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert await asyncio.to_thread(proc.wait, WAIT * 2) == 0
    events = await every_event(watcher, "lock.released", task)
    kinds = [e["event_type"] for e in events]
    # delivered while the run still held the lease: the release comes last in the feed
    assert kinds == ["lock.acquired", "task.started", "task.transcript", "task.transcript",
                     "task.completed", "lock.released"]
    assert [e["payload"]["content"] for e in events[2:4]] == ["ready", "done"]
    offsets = [e["offset"] for e in events]
    assert offsets == sorted(offsets)
    assert Outbox(ctx.repo.local_dir).counts()["pending"] == 0


def _transcripts(ctx: Context) -> list[dict[str, Any]]:
    box = Outbox(ctx.repo.local_dir)
    try:
        return [json.loads(row.data) for row in box.pending(1_000_000)]
    finally:
        box.close()


async def test_kill_9_of_orc_run_mid_output_then_sync_delivers_what_was_written(
        server: ServerProc, team_context: TeamContext, connect_as: Any) -> None:
    ctx = team_context(dead_url(), "alice")  # nothing leaves before the kill
    task, project = unique("KILLED"), unique("proj")
    proc = orc_popen("run", task, "--project", project, "--", sys.executable, "-c", CHATTY,
                     cwd=ctx.repo.worktree)
    assert proc.stdout is not None
    # Output is passed on before each read's lines are kept: a line past the first 64 KiB
    # (about 650 of these lines) on our stdout means at least that first read is in the outbox.
    Lines(proc.stdout).wait_for(f"line 2000{PAD}\n", timeout=WAIT * 3)
    os.killpg(proc.pid, signal.SIGKILL)  # orc run and its child, mid-output
    proc.wait(timeout=WAIT)
    kept = _transcripts(ctx)
    assert kept[0]["event_type"] == "task.started"
    lines = [e["payload"]["content"] for e in kept[1:]]
    assert len(lines) >= 1 and all(e["event_type"] == "task.transcript" for e in kept[1:])
    assert lines == [f"line {i}{PAD}" for i in range(1, len(lines) + 1)]  # a prefix, no gap

    watcher = await watch(connect_as, project)
    done = await asyncio.to_thread(run_orc, "team", "sync", "--json", cwd=ctx.repo.worktree,
                                   env={**NO_AUTOSYNC, "ORC_TEAM_URL": f"ws://{server.base}"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["delivered"] == len(kept)
    got = [(await watcher.expect(lambda m: m.get("type") == "event"))["data"]
           for _ in kept]
    assert [e["event_id"] for e in got] == [e["event_id"] for e in kept]
    assert [m for m in await watcher.barrier() if m.get("type") == "event"] == []


def test_orc_run_with_a_corrupt_outbox_runs_and_says_so_once(
        server: ServerProc, team_context: TeamContext) -> None:
    ctx = team_context(server, "alice")
    local = ctx.repo.local_dir
    local.mkdir(parents=True)
    (local / "outbox.sqlite3").write_bytes(b"not a database\n" * 50)
    done = run_orc("run", unique("CORRUPT"), "--", "printf", "a\\nb\\n", cwd=ctx.repo.worktree,
                   env=NO_AUTOSYNC)
    assert done.returncode == 0 and done.stdout == "a\nb\n", done.stderr
    assert done.stderr.count("moved aside") == 1 and "Traceback" not in done.stderr
    assert len(list(local.glob("outbox.sqlite3.corrupt-*"))) == 1
    assert Outbox(local).counts()["rejected"] == 0  # a fresh, readable outbox


def test_orc_run_with_an_unwritable_outbox_runs_and_says_so_once(
        server: ServerProc, team_context: TeamContext) -> None:
    ctx = team_context(server, "alice")
    local = ctx.repo.local_dir
    (local / "outbox.sqlite3").mkdir(parents=True)  # cannot be opened (root ignores chmod)
    done = run_orc("run", unique("RO"), "--", "printf", "a\\nb\\n", cwd=ctx.repo.worktree,
                   env=NO_AUTOSYNC)
    assert done.returncode == 0 and done.stdout == "a\nb\n", done.stderr
    assert done.stderr.count("cannot write the outbox") == 1, done.stderr
    assert "Traceback" not in done.stderr
