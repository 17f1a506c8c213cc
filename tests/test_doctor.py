"""``orc doctor`` in the core (mode, config files, identity, hooks, plugins and the
``orc_git_doctor`` hook), ``orc init --mode team`` without a URL, ``orc mode``'s team hints, and
every ``orc team …`` command without the team plugin.  Team-server checks are tested in the
plugin (plugins/orc-team/tests/test_auth_flow.py) against a real server."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from conftest import PluginFreePython, orc, orc_json
from test_plugins import install_plugin

import orc_git


def checks(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc["checks"]}


def test_doctor_fails_on_missing_hooks_and_passes_once_they_are_installed(repo: Path) -> None:
    code, doc = orc_json("doctor", cwd=repo)
    assert code == 1 and doc["schema"] == 1 and doc["mode"] == "p2p" and doc["ok"] is False
    found = checks(doc)
    assert found["hooks"]["ok"] is False and found["hooks"]["hint"] == "orc hooks install"
    assert "pre-commit" in found["hooks"]["detail"]
    assert found["mode"]["ok"] and found["mode"]["data"]["mode"] == "p2p"
    assert found["identity"]["data"]["user"] == "alice"
    layers = {entry["layer"]: entry["state"] for entry in found["config"]["data"]["layers"]}
    assert layers == {"shared": "present", "user": "present", "local": "absent"}

    proc = orc("doctor", cwd=repo)
    assert proc.returncode == 1
    assert "FAIL  hooks" in proc.stdout and "fix: orc hooks install" in proc.stdout
    assert "1 problem(s): hooks" in proc.stderr

    assert orc("hooks", "install", cwd=repo).returncode == 0
    code, doc = orc_json("doctor", cwd=repo)
    assert code == 0 and doc["ok"] is True, doc
    assert sys.executable in checks(doc)["hooks"]["detail"]


def test_doctor_names_the_unreadable_config_file(repo: Path) -> None:
    local = repo / ".orc" / "local" / "config.yaml"
    local.write_text("lock: [unclosed\n")
    code, doc = orc_json("doctor", cwd=repo)
    assert code == 1
    found = checks(doc)
    assert found["config"]["ok"] is False and str(local) in found["config"]["hint"]
    assert found["mode"]["ok"] is False
    layers = {entry["layer"]: entry["state"] for entry in found["config"]["data"]["layers"]}
    assert layers["local"] == "unreadable"


def test_doctor_never_shows_the_token(repo: Path) -> None:
    secret = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2VjcmV0LXNpZ25hdHVyZQ"
    proc = orc("doctor", "--json", cwd=repo, env={"ORC_TEAM_TOKEN": secret})
    assert secret not in proc.stdout + proc.stderr
    assert "ORC_TEAM_TOKEN" in checks(json.loads(proc.stdout))["config"]["detail"]


def test_init_team_without_a_url_is_refused_and_changes_nothing(solo_repo: Path) -> None:
    proc = orc("init", "--mode", "team", cwd=solo_repo)
    assert proc.returncode == 2
    assert "--server-url" in proc.stderr and "orc team login" in proc.stderr
    assert not (solo_repo / ".orc").exists() and not (solo_repo / ".gitignore").exists()

    proc = orc("init", "--mode", "team", cwd=solo_repo, env={"ORC_TEAM_URL": "ws://127.0.0.1:9"})
    assert proc.returncode == 0, proc.stderr  # a URL from another layer is enough


def test_mode_in_team_mode_says_what_is_missing_and_points_to_doctor(solo_repo: Path) -> None:
    proc = orc("mode", cwd=solo_repo, env={"ORC_MODE": "team"})
    assert proc.returncode == 0 and proc.stdout == "team\n"
    assert "no team server URL" in proc.stderr and "no team token" in proc.stderr
    assert "orc doctor" in proc.stderr
    code, doc = orc_json("mode", cwd=solo_repo, env={"ORC_TEAM_URL": "ws://127.0.0.1:9"})
    assert code == 0 and doc["mode"] == "team"
    assert [p for p in doc["problems"] if "token" in p] and len(doc["problems"]) == 1


def test_every_team_command_without_the_plugin_names_the_install_command(
        solo_repo: Path, plugin_free: PluginFreePython) -> None:
    for args in (("team", "serve"), ("team", "login", "ws://x:1"), ("team",), ("team", "--help"),
                 ("team", "status", "--json")):
        proc = plugin_free.orc(*args, cwd=solo_repo)
        assert proc.returncode == 3, (args, proc.stderr)
        assert "`orc plugins install team`" in proc.stderr + proc.stdout, args
        assert "Traceback" not in proc.stderr
    proc = plugin_free.orc("--help", cwd=solo_repo)
    assert "orc plugins install team" in proc.stdout


def test_plugins_install_team_runs_pip_on_the_checkout_folder(
        solo_repo: Path, plugin_free: PluginFreePython) -> None:
    proc = plugin_free.orc("plugins", "install", "team", "--dry-run", "--json", cwd=solo_repo)
    assert proc.returncode == 0, proc.stderr
    command = json.loads(proc.stdout)["command"]
    checkout = Path(orc_git.__file__).resolve().parent.parent
    assert command == [sys.executable, "-m", "pip", "install", "-e",
                       str(checkout / "plugins" / "orc-team")]
    assert plugin_free.orc("plugins", "--json", cwd=solo_repo).returncode == 0  # still lists


def test_doctor_in_team_mode_without_the_plugin(repo: Path,
                                                plugin_free: PluginFreePython) -> None:
    proc = plugin_free.orc("doctor", "--json", cwd=repo, env={"ORC_MODE": "team"})
    assert proc.returncode == 1
    plugins = checks(json.loads(proc.stdout))["plugins"]
    assert plugins["ok"] is False and "orc plugins install team" in plugins["hint"]


DOCTOR_PLUGIN = """
import orc_git
from orc_git.doctor import Check

@orc_git.hookimpl
def orc_git_doctor(context):
    return [Check("demo", context.mode == "p2p", f"mode seen: {context.mode}", "demo fix")]
"""

BROKEN_DOCTOR_PLUGIN = """
import orc_git

@orc_git.hookimpl
def orc_git_doctor(context):
    raise RuntimeError("demo doctor bug")
"""


def test_plugins_add_checks_and_a_failing_one_is_one_failed_check(
        repo: Path, tmp_path: Path, plugin_free: PluginFreePython) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install_plugin(site, "demo_doctor", DOCTOR_PLUGIN)
    assert orc("hooks", "install", cwd=repo).returncode == 0
    proc = plugin_free.orc("doctor", "--json", cwd=repo, path=(site,))
    assert proc.returncode == 0, proc.stdout
    assert checks(json.loads(proc.stdout))["demo"]["detail"] == "mode seen: p2p"

    install_plugin(site, "broken_doctor", BROKEN_DOCTOR_PLUGIN)
    proc = plugin_free.orc("doctor", "--json", cwd=repo, path=(site,))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    broken = checks(json.loads(proc.stdout))["plugin broken_doctor"]
    assert broken["ok"] is False and "demo doctor bug" in broken["detail"]


def test_doctor_fails_when_the_hooks_python_is_gone(repo: Path) -> None:
    from orc_git.githooks.install import install

    install(repo, python=str(repo / "gone" / "python"))
    code, doc = orc_json("doctor", cwd=repo)
    assert code == 1
    hooks = checks(doc)["hooks"]
    assert hooks["ok"] is False and "Python is gone" in hooks["detail"]
    assert hooks["hint"] == "orc hooks install"
