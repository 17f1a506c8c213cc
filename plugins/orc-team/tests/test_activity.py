"""``orc team activity [--follow]`` and ``orc team who``: real CLI processes against a real
server, their text and JSON, hostile text, colour only on a terminal, and a server that is down
or never answers."""

from __future__ import annotations

import datetime
import json
import os
import pty
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from orc_team.feed import ansi, event_line, plain

from conftest import (
    WAIT,
    Client,
    Lines,
    ServerFactory,
    ServerProc,
    dead_url,
    run_orc,
    token,
    unique,
)


def cli_env(tmp_path: Path, base: str, user: str = "carol", **extra: str) -> dict[str, str]:
    return {"ORC_HOME": str(tmp_path / "home"), "ORC_TEAM_URL": base,
            "ORC_TEAM_TOKEN": token(user), **extra}


async def publish(client: Client, project: str, events: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    for e in events:
        e.setdefault("event_id", str(uuid.uuid4()))
        e["project_id"] = project
    reply = await client.request("events", {"events": events})
    assert reply["type"] == "acks", reply
    acks: list[dict[str, Any]] = reply["data"]["acks"]
    assert all("error" not in a for a in acks), acks
    return acks


def run_events(task: str) -> list[dict[str, Any]]:
    return [
        {"event_type": "task.started", "task_id": task, "payload": {"command": "make"}},
        {"event_type": "task.transcript", "task_id": task,
         "payload": {"role": "stdout", "content": "\x1b[2Jcleared\u202eevil " + "x" * 300}},
        {"event_type": "task.transcript", "task_id": task,
         "payload": {"role": "stderr", "content": "warning: careful"}},
        {"event_type": "task.failed", "task_id": task,
         "payload": {"exit_code": 2, "duration_s": 1.25}},
    ]


async def test_activity_text_and_json(server: ServerProc, connect_as: Any,
                                      tmp_path: Path) -> None:
    project, task = unique("acme"), unique()
    alice: Client = await connect_as("alice")
    await alice.lock(task, project_id=project)
    acks = await publish(alice, project, run_events(task))
    env = cli_env(tmp_path, f"ws://{server.base}")
    done = run_orc("team", "activity", "--project", project, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 5 and done.stderr == ""
    alice_cell = "Alice".ljust(18)
    assert lines[0].endswith(f"{alice_cell}  locked {task}  ({project})")
    assert f"{alice_cell}  started {task}  ({project})" in lines[1]
    assert f"{task} | \\x1b[2Jcleared\\u202eevil xxx" in lines[2] and "…" in lines[2]
    assert len(lines[2]) < 200, "a transcript line is shown compactly"
    assert f"{task} ! warning: careful" in lines[3]
    assert f"failed {task}  (exit 2, 1.2 s)" in lines[4]
    assert "\x1b" not in done.stdout and "\u202e" not in done.stdout
    # --json: the events as the server keeps them, oldest first; --since and --limit.
    done = run_orc("team", "activity", "--project", project, "--since", "1", "--limit", "2",
                   "--json", cwd=tmp_path, env=env)
    doc = json.loads(done.stdout)
    assert done.returncode == 0 and doc["schema"] == 1 and doc["truncated"] is False
    assert [e["event_id"] for e in doc["events"]] == [a["event_id"] for a in acks[:2]]
    assert doc["last_offset"] == 5 and doc["epoch"] == acks[0]["epoch"]
    # The project comes from team.project when not given.
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "config.yaml").write_text(f"team:\n  project: {project}\n")
    done = run_orc("team", "activity", "--limit", "1", cwd=tmp_path, env=env)
    assert done.returncode == 0 and f"failed {task}" in done.stdout
    (home / "config.yaml").write_text("team: {}\n")
    done = run_orc("team", "activity", cwd=tmp_path, env=env)
    assert done.returncode == 2 and "--project" in done.stderr
    for bad in (["--project", "a b"], ["--project", project, "--limit", "0"],
                ["--project", project, "--limit", "1001"], ["--project", project, "--since", "-1"]):
        done = run_orc("team", "activity", *bad, cwd=tmp_path, env=env)
        assert done.returncode == 2 and "Traceback" not in done.stderr, bad


async def test_activity_follow_prints_live_events(server: ServerProc, connect_as: Any,
                                                  tmp_path: Path) -> None:
    project, task = unique("acme"), unique()
    alice: Client = await connect_as("alice")
    await publish(alice, project, run_events(task)[:1])
    env = {**os.environ, **cli_env(tmp_path, f"ws://{server.base}")}
    follow = subprocess.Popen([sys.executable, "-m", "orc_git", "team", "activity",
                               "--project", project, "--follow"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out = Lines(follow.stdout)
        out.wait_for(f"started {task}")
        await alice.presence("carol", "online")  # the follow connection is open
        await publish(alice, project, [{"event_type": "task.phase", "task_id": task,
                                        "payload": {"phase": "review"}}])
        out.wait_for(f"{task}: phase review")
        follow.send_signal(signal.SIGINT)
        assert follow.wait(timeout=WAIT) == 130
        assert follow.stderr is not None and follow.stderr.read() == ""
        assert [line for line in out.text.splitlines() if task in line][-1].endswith(
            f"{task}: phase review  ({project})")
        assert sum(task in line for line in out.text.splitlines()) == 2
    finally:
        follow.kill()
        follow.wait()


async def test_follow_catches_up_after_the_server_restarts(
        start_server: ServerFactory, connect_as: Any, tmp_path: Path) -> None:
    """What is published while the follow is cut off arrives once it is back (since)."""
    server = start_server()
    project, task = unique("acme"), unique()
    alice: Client = await connect_as("alice", on=server)
    await publish(alice, project, run_events(task)[:1])
    env = {**os.environ, **cli_env(tmp_path, f"ws://{server.base}")}
    follow = subprocess.Popen([sys.executable, "-m", "orc_git", "team", "activity",
                               "--project", project, "--follow"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = Lines(follow.stdout), Lines(follow.stderr)
        out.wait_for(f"started {task}")
        await alice.presence("carol", "online")
        await alice.close()
        server.stop(signal.SIGKILL)
        err.wait_for("lost")
        server.start()
        alice = await connect_as("alice", on=server)
        await publish(alice, project, [{"event_type": "task.phase", "task_id": task,
                                        "payload": {"phase": f"after-{n}"}} for n in range(3)])
        out.wait_for(f"{task}: phase after-2", timeout=WAIT * 3)
        lines = [line for line in out.text.splitlines() if task in line]
        assert [line.split(f"{task}")[-1] for line in lines] == [
            "  (" + project + ")", ": phase after-0  (" + project + ")",
            ": phase after-1  (" + project + ")", ": phase after-2  (" + project + ")"]
        follow.send_signal(signal.SIGINT)
        assert follow.wait(timeout=WAIT) == 130
    finally:
        follow.kill()
        follow.wait()


async def test_who_shows_presence(server: ServerProc, connect_as: Any,
                                  tmp_path: Path) -> None:
    task = unique()
    alice: Client = await connect_as("alice")
    reply = await alice.request("presence", {"active_task": task})
    assert reply["data"]["status"] == "active"
    env = cli_env(tmp_path, f"ws://{server.base}")
    done = run_orc("team", "who", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.startswith("alice ")]
    assert "active" in line and task in line and "last seen" in line
    done = run_orc("team", "who", "--json", cwd=tmp_path, env=env)
    doc = json.loads(done.stdout)
    [me] = [p for p in doc["presence"] if p["user_id"] == "alice"]
    assert (me["status"], me["active_task"], doc["mode"]) == ("active", task, "team")


def _on_a_terminal(args: list[str], env: dict[str, str], cwd: Path,
                   drop: tuple[str, ...] = ()) -> str:
    """What ``orc ARGS`` writes to stdout when stdout is a terminal."""
    master, slave = pty.openpty()
    whole = {k: v for k, v in {**os.environ, **env}.items() if k not in drop}
    try:
        proc = subprocess.Popen([sys.executable, "-m", "orc_git", *args], cwd=cwd,
                                env=whole, stdout=slave,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=WAIT * 4) == 0
        return b"".join(chunks).decode()
    finally:
        os.close(master)


async def test_colour_only_on_a_terminal_and_never_with_no_color(
        server: ServerProc, connect_as: Any, tmp_path: Path) -> None:
    project, task = unique("acme"), unique()
    alice: Client = await connect_as("alice")
    await publish(alice, project, run_events(task))
    env = cli_env(tmp_path, f"ws://{server.base}")
    coloured = _on_a_terminal(["team", "activity", "--project", project], env, tmp_path,
                              drop=("NO_COLOR",))
    assert "\x1b[31mfailed" in coloured and f"failed {task}" in coloured
    assert "\x1b[2J" not in coloured, "hostile text stays escaped on a terminal"
    plain_text = _on_a_terminal(["team", "activity", "--project", project],
                                {**env, "NO_COLOR": "1"}, tmp_path)
    assert "\x1b" not in plain_text and f"failed {task}" in plain_text


def _listening_never_answering() -> tuple[socket.socket, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # connections complete in the backlog; nobody ever reads them
    return sock, f"ws://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("command", [["team", "activity", "--project", "acme"],
                                     ["team", "activity", "--project", "acme", "--follow"],
                                     ["team", "who"]])
def test_a_server_down_or_hanging_is_a_clear_failure(command: list[str],
                                                     tmp_path: Path) -> None:
    done = run_orc(*command, cwd=tmp_path, env=cli_env(tmp_path, dead_url()))
    assert done.returncode == 3 and "cannot reach the team server" in done.stderr
    assert "Traceback" not in done.stderr
    hang, url = _listening_never_answering()
    with hang:
        done = run_orc(*command, "--json", cwd=tmp_path, env=cli_env(tmp_path, url))
    assert done.returncode == 3
    error = json.loads(done.stdout)["error"]
    assert "timed out" in error["message"]


def test_event_lines_read_at_a_glance() -> None:
    today = datetime.date(2026, 1, 2)
    base = {"user": "alice", "user_name": "Alice Martinez", "task_id": "TASK-1",
            "project_id": "acme", "timestamp": "2026-01-02T12:01:03.000Z"}
    stamp = datetime.datetime(2026, 1, 2, 12, 1, 3, tzinfo=datetime.UTC).astimezone()
    clock = stamp.strftime("%H:%M:%S") if stamp.date() == today else \
        stamp.strftime("%Y-%m-%d %H:%M:%S")
    line = event_line({**base, "event_type": "task.started", "payload": {}}, plain, today)
    assert line == f"{clock}  {'Alice Martinez'.ljust(18)}  started TASK-1  (acme)"
    killed = event_line({**base, "event_type": "task.failed",
                         "payload": {"exit_code": -9, "signal": "SIGKILL", "duration_s": 3}},
                        plain, today)
    assert killed.endswith("failed TASK-1  (signal SIGKILL, 3.0 s)  (acme)")
    later = event_line({**base, "event_type": "task.started", "payload": {},
                        "made_at": "2025-12-31T23:00:00+00:00"}, plain, today)
    assert "2025-12-31" in later or "2026-01-01" in later  # the publisher's time, dated
    server = event_line({**base, "user": None, "user_name": None, "event_type": "lock.stolen",
                         "payload": {"old_owner": "bob\x1b[0m"}}, ansi, today)
    assert "server" in server and "bob\\x1b[0m" in server and "\x1b[33mtook" in server
    odd = event_line({"event_type": "review.comment", "task_id": "T\nX", "payload": None})
    assert "review.comment T\\nX" in odd and "--:--:--" in odd
