"""``orc merge-state``: git's merge driver for state.yaml, through real merges, rebases and
cherry-picks."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import git, make_repo

from orc_git import flatyaml
from orc_git.errors import MergeConflict
from orc_git.mergestate import decide

TASK = "TASK-MERGE-1"


def state(*, status: str = "running", token: int | None = 1, domain: str | None = "d1",
          at: str = "2026-12-01T10:00:00Z", by: str = "alice", phase: str = "plan") -> bytes:
    return flatyaml.dump([("task_id", TASK), ("status", status), ("phase", phase),
                          ("iteration", None), ("updated_at", at), ("updated_by", by),
                          ("host", "h1"), ("token", token), ("lock_domain", domain)],
                         keep_none=True)


def test_higher_token_wins_within_one_domain_even_if_written_earlier() -> None:
    d = decide(state(token=3, at="2026-12-01T12:00:00Z"), state(token=7, by="bob"))
    assert (d.winner.name, d.winner.state.token) == ("theirs", 7)
    assert "token 7 > 3" in d.reason


def test_later_update_wins_across_domains() -> None:
    d = decide(state(token=9, domain="a", at="2026-12-01T10:00:00Z"),
               state(token=1, domain="b", at="2026-12-01T10:00:05Z"))
    assert d.winner.name == "theirs" and "different lock domains" in d.reason


def test_same_token_falls_back_to_the_later_update_and_a_full_tie_keeps_ours() -> None:
    assert decide(state(token=4), state(token=4, at="2026-12-01T10:00:01Z")).winner.name == \
        "theirs"
    assert decide(state(token=4, phase="a"), state(token=4, phase="b")).winner.name == "ours"


def test_a_state_without_domain_is_judged_by_time() -> None:
    d = decide(state(token=9, domain=None, at="2026-12-01T11:00:00Z"), state(token=10))
    assert d.winner.name == "ours"


@pytest.mark.parametrize("bad", [b"status: [unclosed\n", b"", state(at="yesterday"),
                                 state(status="exploded")])
def test_an_unreadable_side_is_a_conflict(bad: bytes) -> None:
    with pytest.raises(MergeConflict):
        decide(state(), bad)


def test_states_of_different_tasks_are_a_conflict() -> None:
    with pytest.raises(MergeConflict, match="different tasks"):
        decide(state(), state().replace(TASK.encode(), b"TASK-OTHER"))


# --- through git -------------------------------------------------------------------------------

def _install_driver(repo: Path) -> None:
    driver = f"{shlex.quote(sys.executable)} -m orc_git merge-state %O %A %B %P"
    git("config", "merge.orc-state.name", "orc task state", cwd=repo)
    git("config", "merge.orc-state.driver", driver, cwd=repo)
    (repo / ".gitattributes").write_text(".orc/tasks/*/state.yaml merge=orc-state\n")


def _commit_state(repo: Path, raw: bytes, message: str) -> None:
    path = repo / ".orc" / "tasks" / TASK / "state.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", message, cwd=repo)


@pytest.fixture
def branched(tmp_path: Path) -> Path:
    """main and a branch `other` that both changed one task's state since their fork."""
    repo = make_repo(tmp_path / "r")
    _install_driver(repo)
    _commit_state(repo, state(token=1, status="created", at="2026-12-01T09:00:00Z"), "base")
    git("checkout", "-q", "-b", "other", cwd=repo)
    _commit_state(repo, state(token=5, at="2026-12-01T10:00:00Z", by="bob"), "bob runs")
    git("checkout", "-q", "main", cwd=repo)
    _commit_state(repo, state(token=2, status="failed", at="2026-12-01T11:00:00Z"), "alice")
    return repo


def _state_at(repo: Path) -> bytes:
    return (repo / ".orc" / "tasks" / TASK / "state.yaml").read_bytes()


def test_a_merge_keeps_the_higher_token_without_a_conflict(branched: Path) -> None:
    proc = subprocess.run(["git", "merge", "--no-edit", "other"], cwd=branched,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _state_at(branched) == state(token=5, at="2026-12-01T10:00:00Z", by="bob")
    assert "kept theirs" in proc.stdout + proc.stderr


@pytest.mark.parametrize("onto, how", [("other", ["rebase", "-q", "main"]),
                                       ("main", ["cherry-pick", "other"])])
def test_rebase_and_cherry_pick_merge_too(branched: Path, onto: str, how: list[str]) -> None:
    git("checkout", "-q", onto, cwd=branched)
    git(*how, cwd=branched)  # check=True: a conflict would raise
    assert flatyaml.load(_state_at(branched), 1 << 16)["token"] == 5


def test_a_malformed_side_leaves_git_conflict_markers(branched: Path) -> None:
    git("checkout", "-q", "other", cwd=branched)
    _commit_state(branched, b"this is: [not a state\n", "broken")
    git("checkout", "-q", "main", cwd=branched)
    proc = subprocess.run(["git", "merge", "--no-edit", "other"], cwd=branched,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "unreadable" in proc.stdout + proc.stderr
    text = _state_at(branched).decode()
    assert "<<<<<<< ours" in text and ">>>>>>> theirs" in text
