"""The plugin as orc-git sees it: discovered by entry point, adding ``orc team``, and answering
team mode's locker hook with the TeamLocker (for this process, or for a holder ``pid``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from orc_git.context import Context

from orc_team.client.holder import client_id
from orc_team.client.team import TeamLocker

from conftest import token


def orc(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "ORC_HOME": str(cwd / "home"), **env}
    return subprocess.run([sys.executable, "-m", "orc_git", *args], cwd=cwd, env=full,
                          text=True, capture_output=True, timeout=30)


def test_orc_plugins_lists_team(tmp_path: Path) -> None:
    done = orc("plugins", cwd=tmp_path)
    assert done.returncode == 0
    assert any(line.split("\t")[:2] == ["team", "orc-team 0.1.0"]
               for line in done.stdout.splitlines()), done.stdout


def test_team_mode_locker_is_the_team_locker(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.setenv("ORC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORC_MODE", "team")
    monkeypatch.setenv("ORC_TEAM_URL", "ws://127.0.0.1:9")
    monkeypatch.setenv("ORC_TEAM_TOKEN", token("alice"))
    ctx = Context.discover(tmp_path)
    mine = ctx.locker()
    assert isinstance(mine, TeamLocker) and mine is ctx.locker()  # cached, not connected
    assert not mine.server.client.connected
    parent = ctx.locker(os.getppid())  # what `orc lock acquire` uses: the calling process
    assert isinstance(parent, TeamLocker) and parent is not mine
    assert parent.server.client_id == client_id(os.getppid()) != mine.server.client_id
    assert parent.file.holder.pid == os.getppid() and parent.file.user_owns
    for locker in (mine, parent):
        locker.close()


def test_team_mode_without_a_url_is_a_config_error(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    done = orc("lock", "status", "T-1", "--json", cwd=tmp_path, ORC_MODE="team")
    assert done.returncode == 3
    out = json.loads(done.stdout)
    assert out["mode"] == "team" and out["error"]["code"] == "CONFIG_ERROR"
    assert "team.server_url" in out["error"]["message"]


def test_orc_team_help(tmp_path: Path) -> None:
    done = orc("team", "serve", "--help", cwd=tmp_path)
    assert done.returncode == 0
    for option in ("--host", "--port", "--store", "--away-after"):
        assert option in done.stdout


def test_the_team_commands_do_not_load_the_server_stack() -> None:
    """Every ``orc`` command that builds the plugin's parsers imports ``orc_team.cli``: the
    server's HTTP stack (aiohttp) would cost each of them a third of a second."""
    code = ("import sys, orc_team.cli, orc_team.plugin; "
            "print(sorted(m for m in ('aiohttp', 'websockets', 'orc_team.server.app') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
