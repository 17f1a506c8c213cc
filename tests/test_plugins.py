"""Plugins found through the real ``orc_git`` entry-point group: each test installs fake
distributions (a module and its ``.dist-info``) in a directory put on ``PYTHONPATH`` of the real
``orc`` command, as ``pip install`` would lay them out.  The command runs where no other plugin
is installed (:class:`PluginFreePython`), so an installed orc-team never changes the outcome."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import PluginFreePython, leased, orc

Run = Callable[..., subprocess.CompletedProcess[str]]

EVENTS_PLUGIN = """
import os
import orc_git

@orc_git.hookimpl
def orc_git_lock_event(event):
    token = event.lock.token if event.lock is not None else None
    with open(os.environ["DEMO_EVENTS"], "a") as fh:
        fh.write(f"{event.kind} {event.task_id} {event.mode} {token}\\n")
"""

TEAM_PLUGIN = """
import os
import orc_git
from orc_git.locking.info import LockInfo


def record(what):
    with open(os.environ["DEMO_EVENTS"], "a") as fh:
        fh.write(what + "\\n")


def info(task_id, ttl=60):
    return LockInfo(task_id, locked=True, owner="team@server", user="team", host="server",
                    pid=1, ttl=ttl, token=42, mine=True)


class DemoTeamLocker:
    name = "demo-team"

    def acquire(self, task_id, *, ttl=None, force=False):
        record(f"acquire {task_id}")
        return info(task_id, ttl or 60)

    def release(self, task_id, *, force=False):
        record(f"release {task_id}")
        return True

    def heartbeat(self, task_id):
        record(f"heartbeat {task_id}")
        return info(task_id)

    def is_locked(self, task_id):
        return info(task_id)

    def list_locks(self):
        return [info("ON-SERVER")]

    def clean(self):
        return []


@orc_git.hookimpl
def orc_git_locker(mode, context):
    return DemoTeamLocker() if mode == "team" else None
"""

COMMAND_PLUGIN = """
import orc_git


def hello(args, out):
    print(f"hello {args.name}")
    return 4 if args.fail else 0


@orc_git.hookimpl
def orc_git_cli_commands(subparsers):
    p = subparsers.add_parser("hello", help="say hello")
    p.add_argument("--name", default="world")
    p.add_argument("--fail", action="store_true")
    p.set_defaults(func=hello)
"""


def install_plugin(site: Path, module: str, code: str, *, dist: str | None = None,
                   version: str = "1.2.3", entry: str | None = None) -> None:
    """A distribution as pip lays it out: the module, and a dist-info naming its entry point."""
    dist = dist or module
    (site / f"{module}.py").write_text(textwrap.dedent(code))
    info = site / f"{dist}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[orc_git]\n{entry or module} = {module}\n")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    path = tmp_path / "site"
    path.mkdir()
    return path


@pytest.fixture
def events(tmp_path: Path) -> Path:
    return tmp_path / "events.txt"


@pytest.fixture
def run(plugin_free: PluginFreePython, site: Path, events: Path) -> Run:
    """The real ``orc`` with ``site`` installed and no other plugin."""

    def run(*args: str, cwd: Path, env: dict[str, str] | None = None,
            other_parent: bool = False) -> subprocess.CompletedProcess[str]:
        return plugin_free.orc(*args, cwd=cwd, path=(site,), other_parent=other_parent,
                               env={"DEMO_EVENTS": str(events), **(env or {})})

    return run


def plugins_json(run: Run, repo: Path) -> dict[str, dict[str, Any]]:
    proc = run("plugins", "--json", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    out = json.loads(lines[0])
    assert out["schema"] == 1 and out["mode"] == "p2p"
    return {p["name"]: p for p in out["plugins"]}


def read_events(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_plugins_lists_an_installed_plugin_with_its_version(run: Run, repo: Path,
                                                            site: Path) -> None:
    assert "demo" not in plugins_json(run, repo)
    install_plugin(site, "demo_plugin", "VALUE = 1\n", entry="demo")
    found = plugins_json(run, repo)
    assert found["demo"] == {"name": "demo", "distribution": "demo_plugin", "version": "1.2.3",
                             "error": None}
    assert found["orc_git.lockers"]["distribution"] == "orc-git"  # the core's own lockers

    text = run("plugins", cwd=repo)
    assert text.returncode == 0
    assert any(line.split("\t") == ["demo", "demo_plugin 1.2.3", "ok"]
               for line in text.stdout.splitlines()), text.stdout


def test_discovery_in_this_very_environment(repo: Path, site: Path) -> None:
    """The same, with the ordinary interpreter and whatever else is installed here."""
    install_plugin(site, "demo_plugin", "VALUE = 1\n", entry="demo")
    proc = orc("plugins", "--json", cwd=repo, env={"PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr
    found = {p["name"]: p for p in json.loads(proc.stdout)["plugins"]}
    assert found["demo"]["version"] == "1.2.3" and found["demo"]["error"] is None


@pytest.mark.parametrize("failure", [
    "raise RuntimeError('broken on purpose')",
    "import no_such_module_for_orc_tests",
    "import sys; sys.exit('broken on purpose')",
])
def test_a_plugin_that_fails_to_import_is_reported_and_skipped(
        run: Run, repo: Path, site: Path, events: Path, failure: str) -> None:
    install_plugin(site, "broken_plugin", failure + "\n", entry="broken")
    install_plugin(site, "events_plugin", EVENTS_PLUGIN, entry="events")

    found = plugins_json(run, repo)
    error = found["broken"]["error"]
    assert error and ("broken on purpose" in error or "no_such_module_for_orc_tests" in error)
    assert found["events"]["error"] is None

    acquire = run("lock", "acquire", "T", cwd=repo)
    assert acquire.returncode == 0, acquire.stderr
    assert "Traceback" not in acquire.stderr
    assert "broken" in acquire.stderr  # reported to the user, not hidden
    assert leased(repo, "T")
    release = run("lock", "release", "T", cwd=repo)
    assert release.returncode == 0, release.stderr
    assert not leased(repo, "T")
    # the healthy plugin beside the broken one still works
    assert [e.split()[0] for e in read_events(events)] == ["acquired", "released"]


def test_lock_events_reach_a_plugin(run: Run, repo: Path, site: Path, events: Path) -> None:
    install_plugin(site, "events_plugin", EVENTS_PLUGIN, entry="events")

    assert run("lock", "acquire", "T", cwd=repo).returncode == 0
    assert run("lock", "release", "T", cwd=repo).returncode == 0
    assert read_events(events) == ["acquired T p2p 1", "released T p2p None"]

    # a lease whose holder is gone, taken over: the takeover says why
    events.unlink()
    assert run("lock", "acquire", "S", cwd=repo, other_parent=True).returncode == 0
    assert run("lock", "acquire", "S", cwd=repo).returncode == 0
    assert read_events(events) == ["acquired S p2p 1", "holder-dead S p2p 2",
                                   "acquired S p2p 2"]

    # taken by force, and a stale lease removed by `clean`
    events.unlink()
    assert run("lock", "steal", "S", cwd=repo, other_parent=True).returncode == 0
    assert read_events(events) == ["stolen S p2p 3", "acquired S p2p 3"]
    assert run("lock", "clean", cwd=repo).returncode == 0  # the thief has exited
    assert read_events(events)[2:] == ["stale S p2p None"]


def test_a_failing_event_hook_does_not_break_locking(run: Run, repo: Path, site: Path) -> None:
    install_plugin(site, "angry_plugin", """
        import orc_git

        @orc_git.hookimpl
        def orc_git_lock_event(event):
            raise ValueError("observer bug")
    """, entry="angry")
    proc = run("lock", "acquire", "T", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert leased(repo, "T")


def test_a_plugin_adds_a_cli_command(run: Run, repo: Path, site: Path) -> None:
    assert run("hello", cwd=repo).returncode == 2  # not installed yet
    install_plugin(site, "hello_plugin", COMMAND_PLUGIN, entry="hello")
    proc = run("hello", "--name", "bob", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello bob\n"
    assert run("hello", "--fail", cwd=repo).returncode == 4
    # core commands are unaffected by the plugin
    assert run("lock", "status", "T", cwd=repo).returncode == 0


def test_a_plugin_locker_serves_team_mode(run: Run, repo: Path, site: Path,
                                          events: Path) -> None:
    install_plugin(site, "team_plugin", TEAM_PLUGIN, entry="team")
    team = {"ORC_MODE": "team"}

    proc = run("lock", "acquire", "T", "--json", cwd=repo, env=team)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["mode"] == "team" and out["acquired"] is True
    assert out["lock"]["token"] == 42 and out["lock"]["owner"] == "team@server"
    assert not leased(repo, "T")  # the plugin, not the file lease

    proc = run("lock", "status", "T", "--json", cwd=repo, env=team)
    assert json.loads(proc.stdout)["lock"]["owner"] == "team@server"
    proc = run("lock", "list", "--json", cwd=repo, env=team)
    assert [lock["task_id"] for lock in json.loads(proc.stdout)["locks"]] == ["ON-SERVER"]
    assert run("lock", "run", "R", "--", "sh", "-c", "exit 3", cwd=repo,
               env=team).returncode == 3
    assert read_events(events) == ["acquire T", "acquire R", "release R"]

    # in p2p mode the plugin declines and the file lease is used
    proc = run("lock", "acquire", "P", "--json", cwd=repo)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["lock"]["token"] == 1
    assert leased(repo, "P")


def test_team_mode_without_a_plugin_says_how_to_install_it(run: Run, repo: Path) -> None:
    assert list(plugins_json(run, repo)) == ["orc_git.lockers"]  # nothing else installed
    team = {"ORC_MODE": "team"}
    proc = run("lock", "acquire", "T", "--json", cwd=repo, env=team)
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["schema"] == 1 and out["mode"] == "team"
    assert out["error"]["code"] == "PLUGIN_MISSING"
    assert "orc plugins install team" in out["error"]["message"]
    assert not leased(repo, "T")

    proc = run("lock", "status", "T", cwd=repo, env=team)
    assert proc.returncode == 3
    assert "orc plugins install team" in proc.stderr
    assert "Traceback" not in proc.stderr
