"""``orc hooks install`` registers the state.yaml merge driver; concurrent state commits on two
branches then merge without a conflict, and ``uninstall`` takes it away again."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import git, orc, orc_json

from orc_git import flatyaml
from orc_git.githooks.mergedriver import ATTRIBUTE

TASK = "TASK-MD-1"


def _state(repo: Path) -> dict[str, object]:
    return flatyaml.load((repo / ".orc" / "tasks" / TASK / "state.yaml").read_bytes(), 1 << 16)


def _run_under_lease(repo: Path, phase: str) -> None:
    """Take the task's lease, record a state under it, release, commit."""
    assert orc("lock", "acquire", TASK, cwd=repo).returncode == 0
    assert orc("task", "state", TASK, "--status", "running", "--phase", phase,
               cwd=repo).returncode == 0
    assert orc("lock", "release", TASK, cwd=repo).returncode == 0
    git("commit", "-qam", f"{TASK}: {phase}", cwd=repo)


def _two_holders_on_two_branches(repo: Path) -> None:
    """A task committed on main; branch `other` runs it, then main runs it again later."""
    assert orc("task", "new", TASK, cwd=repo).returncode == 0
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "task", cwd=repo)
    git("checkout", "-qb", "other", cwd=repo)
    _run_under_lease(repo, "first-holder")
    git("checkout", "-q", "main", cwd=repo)
    _run_under_lease(repo, "second-holder")  # a later grant: a higher token


def test_install_registers_driver_and_attribute(repo: Path) -> None:
    before = git("status", "--porcelain", cwd=repo)
    code, out = orc_json("hooks", "install", cwd=repo)
    assert code == 0 and out["merge_driver"]["installed"] is True
    assert ATTRIBUTE in (repo / ".git" / "info" / "attributes").read_text().splitlines()
    assert git("status", "--porcelain", cwd=repo) == before  # nothing new to commit
    assert "merge-state %O %A %B %P" in git("config", "merge.orc-state.driver", cwd=repo)
    code, out = orc_json("hooks", "status", cwd=repo)
    assert out["merge_driver"]["installed"] and out["merge_driver"]["current"]
    code, again = orc_json("hooks", "install", cwd=repo)
    assert again["merge_driver"]["action"] == "unchanged"


def test_concurrent_state_commits_merge_and_the_later_holder_wins(repo: Path) -> None:
    assert orc("hooks", "install", cwd=repo).returncode == 0
    _two_holders_on_two_branches(repo)
    later = _state(repo)
    proc = subprocess.run(["git", "merge", "--no-edit", "other"], cwd=repo, text=True,
                          capture_output=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _state(repo) == later
    git("checkout", "-q", "other", cwd=repo)
    proc = subprocess.run(["git", "merge", "--no-edit", "main"], cwd=repo, text=True,
                          capture_output=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _state(repo)["phase"] == "second-holder"


def test_without_the_driver_git_conflicts_as_before(repo: Path) -> None:
    """The control: the same history conflicts when the driver is not registered."""
    _two_holders_on_two_branches(repo)
    proc = subprocess.run(["git", "merge", "--no-edit", "other"], cwd=repo, text=True,
                          capture_output=True)
    assert proc.returncode != 0 and "CONFLICT" in proc.stdout


def test_uninstall_removes_driver_and_only_its_line(repo: Path) -> None:
    attributes = repo / ".git" / "info" / "attributes"
    attributes.parent.mkdir(exist_ok=True)
    attributes.write_text("*.png binary\n")
    assert orc("hooks", "install", cwd=repo).returncode == 0
    code, out = orc_json("hooks", "uninstall", cwd=repo)
    assert code == 0 and out["merge_driver"]["action"] == "removed"
    assert attributes.read_text() == "*.png binary\n"
    proc = subprocess.run(["git", "config", "--get-regexp", "^merge\\."], cwd=repo,
                          capture_output=True, text=True)
    assert proc.stdout == ""


def test_a_symlinked_attributes_file_is_never_written_through(repo: Path,
                                                             tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    attributes = repo / ".git" / "info" / "attributes"
    attributes.parent.mkdir(exist_ok=True)
    attributes.symlink_to(victim)
    proc = orc("hooks", "install", cwd=repo)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    assert "attributes" in proc.stderr
    assert victim.read_text() == "precious\n"
