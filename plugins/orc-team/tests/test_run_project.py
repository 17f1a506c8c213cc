"""``orc run --project P`` in team mode: the lock it takes on the team server carries P, so the
project's subscribers see the run's ``lock.*`` events; without ``--project``, config
``team.project`` does.  Real server, the real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import WAIT, Lines, ServerProc, git_repo, token, unique

HOLD = "import sys; print('ready', flush=True); sys.stdin.readline()"


def _lock_while_running(server: ServerProc, repo: Path, task: str, env: dict[str, str],
                        *extra: str) -> dict[str, Any]:
    import os

    proc = subprocess.Popen([sys.executable, "-m", "orc_git", "run", task, *extra, "--",
                             sys.executable, "-c", HOLD], cwd=repo,
                            env={**os.environ, **env}, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        Lines(proc.stdout).wait_for("ready", timeout=WAIT * 3)
        status, body = server.http(f"/api/locks/{task}", env["ORC_TEAM_TOKEN"])
        assert status == 200, body
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    lock: dict[str, Any] = body["lock"]
    return lock


def test_run_project_reaches_the_lock_on_the_server(server: ServerProc, tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    env = {"ORC_HOME": str(tmp_path / "home"), "ORC_MODE": "team",
           "ORC_TEAM_URL": f"ws://{server.base}", "ORC_TEAM_TOKEN": token("alice")}
    project, task = unique("proj"), unique()
    lock = _lock_while_running(server, repo, task, env, "--project", project)
    assert lock["task_id"] == task and lock["project_id"] == project

    (repo / ".orc" / "local").mkdir(parents=True, exist_ok=True)
    configured, task = unique("proj"), unique()
    (repo / ".orc" / "local" / "config.yaml").write_text(f"team: {{project: {configured}}}\n")
    lock = _lock_while_running(server, repo, task, env)
    assert lock["project_id"] == configured


def test_the_core_cuts_transcripts_where_the_protocol_says() -> None:
    from orc_git.executor.lines import TRANSCRIPT_CHARS

    from orc_team import protocol

    assert TRANSCRIPT_CHARS == protocol.TRANSCRIPT_CHARS
