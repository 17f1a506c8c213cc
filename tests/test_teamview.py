"""``orc tasks --team``: state across remote-tracking branches, read from git objects only."""

from __future__ import annotations

from pathlib import Path

import psutil
from conftest import git, orc, orc_json

from orc_git.teamview import team_states


def _pushed_base(repo: Path, tmp_path: Path) -> None:
    """A bare remote ``origin``, and a first commit with task T-1 pushed to its main."""
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", str(remote), cwd=tmp_path)
    git("remote", "add", "origin", str(remote), cwd=repo)
    assert orc("task", "new", "T-1", cwd=repo).returncode == 0
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "base", cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)


def _branch(repo: Path, name: str, task: str, *state: str) -> None:
    git("checkout", "-q", "-b", name, "main", cwd=repo)
    if not (repo / ".orc/tasks" / task).exists():
        assert orc("task", "new", task, cwd=repo).returncode == 0
    assert orc("task", "state", task, *state, cwd=repo).returncode == 0
    git("add", "-A", cwd=repo)
    git("commit", "-qm", f"{name}: {task}", cwd=repo)
    git("push", "-q", "origin", name, cwd=repo)


def test_team_view_reads_every_remote_branch_without_checking_out(repo: Path,
                                                                  tmp_path: Path) -> None:
    _pushed_base(repo, tmp_path)
    _branch(repo, "alice-work", "T-1", "--status", "running", "--phase", "implement",
            "--token", "1")
    _branch(repo, "bob-work", "T-2", "--status", "blocked")
    git("checkout", "-q", "main", cwd=repo)
    (repo / ".orc/tasks/T-1/state.yaml").write_text("status: [broken, only here\n")
    git("fetch", "-q", "origin", cwd=repo)
    before = git("status", "--porcelain", cwd=repo)

    code, out = orc_json("tasks", "--team", cwd=repo)
    assert code == 0
    tasks = {t["task_id"]: t for t in out["tasks"]}
    assert set(tasks) == {"T-1", "T-2"}
    assert tasks["T-1"]["state"]["status"] == "running"  # the newest state across branches
    assert sorted(tasks["T-1"]["branches"]) == ["origin/alice-work", "origin/bob-work",
                                               "origin/main"]
    assert tasks["T-2"]["branches"] == ["origin/bob-work"]
    assert tasks["T-2"]["state"]["status"] == "blocked"
    assert git("status", "--porcelain", cwd=repo) == before  # nothing checked out or written

    code, out = orc_json("tasks", "--team", "--stale-after", "0", cwd=repo)
    flagged = {t["task_id"] for t in out["tasks"] if t["stale_running"]}
    assert flagged == {"T-1"}


def test_team_view_reports_an_unreadable_state_on_a_branch(repo: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", str(remote), cwd=tmp_path)
    git("remote", "add", "origin", str(remote), cwd=repo)
    assert orc("task", "new", "T-1", cwd=repo).returncode == 0
    (repo / ".orc/tasks/T-1/state.yaml").write_text("!!python/object:os.system [x]\n")
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "broken", cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)
    git("fetch", "-q", "origin", cwd=repo)
    code, out = orc_json("tasks", "--team", cwd=repo)
    assert code == 0
    [task] = out["tasks"]
    assert task["state"] is None and "unreadable" in task["problems"][0]


def test_a_branch_without_tasks_is_skipped_and_no_git_process_is_left(repo: Path,
                                                                      tmp_path: Path) -> None:
    _pushed_base(repo, tmp_path)
    git("checkout", "-q", "--orphan", "bare", cwd=repo)
    git("rm", "-rq", "--cached", ".", cwd=repo)
    (repo / "README").write_text("no tasks here\n")
    git("add", "README", cwd=repo)
    git("commit", "-qm", "no tasks", cwd=repo)
    git("push", "-q", "origin", "bare", cwd=repo)
    git("fetch", "-q", "origin", cwd=repo)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    [task] = team_states(repo)  # `origin/bare:.orc/tasks` is missing: left out, not an error
    assert (task.task_id, task.branches, task.problems) == ("T-1", ["origin/main"], [])
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert left == []  # GitPython's persistent cat-file ended with the view
