"""What ``orc run`` and ``orc_git.run_context`` publish, seen by a real plugin: a distribution
laid out as pip would (a module and its ``.dist-info`` with an ``orc_git`` entry point) in a
directory on ``PYTHONPATH``, whose ``orc_git_event_sink`` writes every sink call as JSON lines.
The commands run where no other plugin is installed (:class:`PluginFreePython`)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import PluginFreePython, leased

from orc_git.executor.lines import TRANSCRIPT_CHARS
from orc_git.state import read_state

SINK_PLUGIN = """
import json, os
import orc_git

PATH = os.environ["RUN_EVENTS"]
calls = 0


def record(kind, **data):
    with open(PATH, "a") as fh:
        fh.write(json.dumps({"kind": kind, **data}) + "\\n")


class Sink:
    def publish(self, events):
        global calls
        calls += 1
        if os.environ.get("RUN_SINK_FAIL"):
            raise RuntimeError("the outbox is on fire")
        with open(PATH, "a") as fh:  # one call, one write
            fh.write("".join(json.dumps({
                "kind": "event", "call": calls, "event_type": e.event_type,
                "task_id": e.task_id, "project_id": e.project_id, "event_id": e.event_id,
                "payload": e.payload}) + "\\n" for e in events))

    def presence(self, status, task_id):
        record("presence", status=status, task_id=task_id)

    def close(self, timeout):
        record("close", timeout=timeout)


@orc_git.hookimpl
def orc_git_event_sink(context):
    record("sink", mode=context.mode, project=context.config.get("team.project"))
    return Sink()


@orc_git.hookimpl
def orc_git_task_event(event):
    if os.environ.get("RUN_HOOK_FAIL"):
        raise ValueError("observer bug")
    record("hook", event=event)
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    (site / "runsink.py").write_text(textwrap.dedent(SINK_PLUGIN))
    info = site / "runsink-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: runsink\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[orc_git]\nrunsink = runsink\n")
    return site


class Recorded:
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def all(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()]

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.all if r["kind"] == "event"
                and (event_type is None or r["event_type"] == event_type)]

    def kinds(self) -> list[str]:
        """The sequence of what the plugin heard, transcripts folded into one entry per role
        run."""
        out: list[str] = []
        for r in self.all:
            what = r["event_type"] if r["kind"] == "event" else (
                f"presence {r['status']}" if r["kind"] == "presence" else
                f"hook {r['event']['event_type']}" if r["kind"] == "hook" else r["kind"])
            if what == "task.transcript" and out and out[-1] == what:
                continue
            out.append(what)
        return out


@pytest.fixture
def recorded(tmp_path: Path) -> Recorded:
    return Recorded(tmp_path / "events.jsonl")


def run_orc(plugin_free: PluginFreePython, site: Path, recorded: Recorded, *args: str,
            cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    full = {**os.environ, **(env or {}), **plugin_free.env(site),
            "RUN_EVENTS": str(recorded.path)}
    return subprocess.run(plugin_free.argv("run", *args), cwd=cwd, env=full,
                          capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


def transcripts(recorded: Recorded, role: str) -> list[str]:
    return [e["payload"]["content"] for e in recorded.events("task.transcript")
            if e["payload"]["role"] == role]


SCRIPT = 'echo "pid $$"; echo one; echo two >&2; printf last'


def test_a_run_publishes_started_transcripts_and_completed_in_order(
        plugin_free: PluginFreePython, site: Path, recorded: Recorded, repo: Path) -> None:
    argv = ["sh", "-c", SCRIPT]
    proc = run_orc(plugin_free, site, recorded, "T", "--project", "acme", "--", *argv,
                   cwd=repo)
    assert proc.returncode == 0, proc.stderr
    pid = int(proc.stdout.split(b"\n")[0].split()[1])
    assert proc.stdout == f"pid {pid}\none\nlast".encode()

    kinds = recorded.kinds()
    assert kinds[0] == "sink"
    assert kinds[1:4] == ["task.started", "hook task.started", "presence active"]
    assert kinds[-4:] == ["task.completed", "hook task.completed", "presence online", "close"]
    assert set(kinds[4:-4]) == {"task.transcript"}
    sink = recorded.all[0]
    assert sink["mode"] == "p2p" and sink["project"] == "acme"  # --project reached the config

    events = recorded.events()
    assert all(e["task_id"] == "T" and e["project_id"] == "acme" for e in events)
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == len(ids)
    assert all(str(uuid.UUID(i)) == i for i in ids)

    started = events[0]
    assert started["event_type"] == "task.started"
    assert started["payload"] == {"command": shlex.join(argv), "host": started["payload"]["host"],
                                  "pid": pid}
    assert isinstance(started["payload"]["host"], str) and started["payload"]["host"]
    done = events[-1]
    assert done["event_type"] == "task.completed"
    assert set(done["payload"]) == {"exit_code", "duration_s"}
    assert done["payload"]["exit_code"] == 0
    assert isinstance(done["payload"]["duration_s"], float) and done["payload"]["duration_s"] >= 0

    assert transcripts(recorded, "stdout") == [f"pid {pid}", "one", "last"]  # last: at EOF
    assert transcripts(recorded, "stderr") == ["two"]

    hooked = [r["event"] for r in recorded.all if r["kind"] == "hook"]
    assert [h["event_id"] for h in hooked] == [started["event_id"], done["event_id"]]
    assert hooked[0] == {k: started[k] for k in ("event_type", "task_id", "project_id",
                                                "event_id", "payload")}
    closes = [r for r in recorded.all if r["kind"] == "close"]
    assert len(closes) == 1 and 0 < closes[0]["timeout"] <= 2


CUTS = r"""
import sys
out = sys.stdout.buffer
out.write(b"x" * 500 + b"\n")
out.write(b"y" * 501 + b"\n")
out.write("é".encode() * 600 + b"\n")
out.write(b"\xff\xfeok\xc3(\r\n")
out.write(b"\n")
out.write(b"z" * (10 * 1024 * 1024) + b"\n")
out.write(b"tail " * 200)
"""


def test_transcript_lines_are_decoded_leniently_and_cut_at_500_characters(
        plugin_free: PluginFreePython, site: Path, recorded: Recorded, repo: Path) -> None:
    proc = run_orc(plugin_free, site, recorded, "T", "--", sys.executable, "-c", CUTS,
                   cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout) > 10 * 1024 * 1024
    assert TRANSCRIPT_CHARS == 500
    assert transcripts(recorded, "stdout") == [
        "x" * 500, "y" * 500 + "...", "é" * 500 + "...", "\ufffd\ufffdok\ufffd(", "",
        "z" * 500 + "...", ("tail " * 200)[:500] + "...",
    ]
    assert recorded.events()[-1]["payload"]["exit_code"] == 0


def test_each_read_is_one_sink_call_and_no_line_is_lost(
        plugin_free: PluginFreePython, site: Path, recorded: Recorded, repo: Path) -> None:
    proc = run_orc(plugin_free, site, recorded, "T", "--", "seq", "1", "20000", cwd=repo)
    assert proc.returncode == 0
    lines = recorded.events("task.transcript")
    assert [e["payload"]["content"] for e in lines] == [str(i) for i in range(1, 20001)]
    calls = {e["call"] for e in lines}
    assert len(calls) < 1000  # batches of a read each, not a call per line
    started, done = recorded.events("task.started"), recorded.events("task.completed")
    assert len(started) == len(done) == 1
    assert started[0]["call"] < min(calls) and done[0]["call"] > max(calls)


@pytest.mark.parametrize(("script", "code", "signal"), [
    ("exit 3", 3, None), ("kill -KILL $$", 137, "SIGKILL"), ("kill -TERM $$", 143, "SIGTERM"),
])
def test_a_failed_run_publishes_task_failed(plugin_free: PluginFreePython, site: Path,
                                            recorded: Recorded, repo: Path, script: str,
                                            code: int, signal: str | None) -> None:
    proc = run_orc(plugin_free, site, recorded, "T", "--", "sh", "-c", script, cwd=repo)
    assert proc.returncode == code
    failed = recorded.events()[-1]
    assert failed["event_type"] == "task.failed"
    expected = {"exit_code": code, "duration_s": failed["payload"]["duration_s"]}
    if signal is not None:
        expected["signal"] = signal
    assert failed["payload"] == expected
    assert not recorded.events("task.completed")


def test_a_missing_command_publishes_task_failed_127(
        plugin_free: PluginFreePython, site: Path, recorded: Recorded, repo: Path) -> None:
    proc = run_orc(plugin_free, site, recorded, "T", "--", "no-such-cmd-orc-test", cwd=repo)
    assert proc.returncode == 127
    assert [e["event_type"] for e in recorded.events()] == ["task.failed"]
    payload = recorded.events()[0]["payload"]
    assert payload["exit_code"] == 127 and "no-such-cmd-orc-test" in payload["error"]


def test_a_sink_that_raises_is_reported_once_and_the_run_goes_on(
        plugin_free: PluginFreePython, site: Path, recorded: Recorded, repo: Path) -> None:
    proc = run_orc(plugin_free, site, recorded, "T", "--", "seq", "1", "5000", cwd=repo,
                   env={"RUN_SINK_FAIL": "1"})
    assert proc.returncode == 0
    assert proc.stdout == b"".join(b"%d\n" % i for i in range(1, 5001))
    err = proc.stderr.decode()
    assert err.count("the outbox is on fire") == 1 and "Traceback" not in err
    assert not recorded.events()  # every publish raised; the sink was left out after the first
    st = read_state(repo / ".orc" / "tasks", "T")
    assert st is not None and st.status == "completed"
    assert not leased(repo, "T")


def test_a_task_event_hook_that_raises_is_reported_once(
        plugin_free: PluginFreePython, site: Path, recorded: Recorded, repo: Path) -> None:
    proc = run_orc(plugin_free, site, recorded, "T", "--", "echo", "hi", cwd=repo,
                   env={"RUN_HOOK_FAIL": "1"})
    assert proc.returncode == 0 and proc.stdout == b"hi\n"
    err = proc.stderr.decode()
    assert err.count("observer bug") == 1 and "Traceback" not in err
    assert [e["event_type"] for e in recorded.events()] == [
        "task.started", "task.transcript", "task.completed"]  # the sink still gets everything


def test_the_project_comes_from_the_config_without_project(
        plugin_free: PluginFreePython, site: Path, recorded: Recorded, repo: Path) -> None:
    run_orc(plugin_free, site, recorded, "T", "--", "true", cwd=repo)
    assert {e["project_id"] for e in recorded.events()} == {None}
    (repo / ".orc" / "local" / "config.yaml").write_text("team: {project: fromconfig}\n")
    recorded.path.unlink()
    run_orc(plugin_free, site, recorded, "T", "--", "true", cwd=repo)
    assert {e["project_id"] for e in recorded.events()} == {"fromconfig"}


API_SCRIPT = r"""
import os, sys
import orc_git
repo, mode = sys.argv[1], sys.argv[2]
if mode == "ok":
    with orc_git.run_context("T", project="acme", repo=repo) as run:
        print("token", run.token, run.task_id, run.project_id, flush=True)
        run.publish("task.phase", {"phase": "plan"})
        run.transcript("assistant", "thinking\n" + "x" * 600 + "\ud800")
        with open(os.path.join(repo, ".orc/tasks/T/state.yaml")) as fh:
            print(fh.read().replace("\n", "|"), flush=True)
elif mode == "raise":
    try:
        with orc_git.run_context("T", repo=repo) as run:
            raise ValueError("boom")
    except ValueError as exc:
        print("re-raised", exc)
elif mode == "held":
    try:
        with orc_git.run_context("T", repo=repo) as run:
            print("ran")
    except orc_git.LockHeld as exc:
        print("refused", exc.code)
"""


def run_api(plugin_free: PluginFreePython, site: Path, recorded: Recorded, repo: Path,
            mode: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **plugin_free.env(site), "RUN_EVENTS": str(recorded.path)}
    return subprocess.run([sys.executable, "-S", "-c", API_SCRIPT, str(repo), mode],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=60)


def test_run_context_publishes_and_keeps_the_state(plugin_free: PluginFreePython, site: Path,
                                                   recorded: Recorded, repo: Path) -> None:
    proc = run_api(plugin_free, site, recorded, repo, "ok")
    assert proc.returncode == 0, proc.stderr
    first, state_text = proc.stdout.splitlines()
    assert first == "token 1 T acme"
    assert 'status: "running"' in state_text and 'phase: "plan"' in state_text
    assert "token: 1" in state_text
    events = recorded.events()
    assert [e["event_type"] for e in events] == ["task.started", "task.phase", "task.transcript",
                                                 "task.transcript", "task.completed"]
    assert events[0]["payload"]["pid"] > 0 and "-S -c" in events[0]["payload"]["command"]
    assert events[1]["payload"] == {"phase": "plan"}
    assert [e["payload"] for e in events[2:4]] == [
        {"role": "assistant", "content": "thinking"},
        {"role": "assistant", "content": "x" * 500 + "..."}]
    assert events[2]["call"] == events[3]["call"]  # one batch
    assert events[4]["payload"]["exit_code"] == 0
    assert {e["project_id"] for e in events} == {"acme"}
    hooked = [r["event"]["event_type"] for r in recorded.all if r["kind"] == "hook"]
    assert hooked == ["task.started", "task.phase", "task.completed"]
    st = read_state(repo / ".orc" / "tasks", "T")
    assert st is not None and (st.status, st.phase, st.token) == ("completed", "plan", 1)
    assert not leased(repo, "T")


def test_run_context_publishes_failed_and_reraises(plugin_free: PluginFreePython, site: Path,
                                                   recorded: Recorded, repo: Path) -> None:
    proc = run_api(plugin_free, site, recorded, repo, "raise")
    assert proc.stdout.strip() == "re-raised boom", proc.stderr
    failed = recorded.events()[-1]
    assert failed["event_type"] == "task.failed"
    assert failed["payload"]["exit_code"] == 1
    assert failed["payload"]["error"] == "ValueError: boom"
    st = read_state(repo / ".orc" / "tasks", "T")
    assert st is not None and st.status == "failed"
    assert not leased(repo, "T")


def test_run_context_on_a_held_task_publishes_nothing(plugin_free: PluginFreePython,
                                                      site: Path, recorded: Recorded,
                                                      repo: Path) -> None:
    from lockcli import hold_here

    hold_here(repo, "T")
    proc = run_api(plugin_free, site, recorded, repo, "held")
    assert proc.stdout.strip() == "refused LOCK_HELD", proc.stderr
    assert not recorded.events()
