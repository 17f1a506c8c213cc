"""The plugin as orc-git sees it: discovered by entry point, adding ``orc team``, and (until the
client is built) answering team mode's locker with a clear PluginMissing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def orc(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "ORC_HOME": str(cwd / "home"), **env}
    return subprocess.run([sys.executable, "-m", "orc_git", *args], cwd=cwd, env=full,
                          text=True, capture_output=True, timeout=30)


def test_orc_plugins_lists_team(tmp_path: Path) -> None:
    done = orc("plugins", cwd=tmp_path)
    assert done.returncode == 0
    assert any(line.split("\t")[:2] == ["team", "orc-team 0.1.0"]
               for line in done.stdout.splitlines()), done.stdout


def test_team_mode_locker_is_not_built_yet(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    done = orc("lock", "status", "T-1", "--json", cwd=tmp_path, ORC_MODE="team")
    assert done.returncode == 3
    out = json.loads(done.stdout)
    assert out["mode"] == "team" and out["error"]["code"] == "PLUGIN_MISSING"
    assert "team client not built yet" in out["error"]["message"]


def test_orc_team_help(tmp_path: Path) -> None:
    done = orc("team", "serve", "--help", cwd=tmp_path)
    assert done.returncode == 0
    for option in ("--host", "--port", "--store", "--away-after"):
        assert option in done.stdout
