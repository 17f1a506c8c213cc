"""Repository discovery: plain repositories, subdirectories, linked worktrees (whose leases live in
the main worktree), separate git dirs and bare clones, and the refusal outside any repository."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import (
    git,
    leased,
    lock_path,
    make_repo,
    orc,
    orc_elsewhere,
    orc_json,
    tree_snapshot,
)

from orc_git.context import Context
from orc_git.errors import EXIT_USAGE, NotARepository
from orc_git.repo import find_repo


def committed(repo: Path) -> Path:
    """Commit what ``orc init`` wrote, so .orc/shared/ travels into new worktrees."""
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "init", cwd=repo)
    return repo


def add_worktree(repo: Path, where: Path, branch: str = "feature") -> Path:
    git("worktree", "add", "-q", "-b", branch, str(where), cwd=repo)
    return where


def test_plain_repository(repo: Path) -> None:
    found = find_repo(repo)
    assert found.worktree == repo
    assert found.git_dir == repo / ".git"
    assert found.common_dir == repo / ".git"
    assert found.main_worktree == repo
    assert found.orc_dir == repo / ".orc"
    assert found.shared_dir == repo / ".orc" / "shared"
    assert found.local_dir == repo / ".orc" / "local"
    assert found.tasks_dir == found.lock_root == repo / ".orc" / "tasks"


def test_from_a_subdirectory(repo: Path) -> None:
    deep = repo / "src" / "pkg" / "deep"
    deep.mkdir(parents=True)
    found = find_repo(deep)
    assert found.worktree == repo
    assert found.lock_root == repo / ".orc" / "tasks"


def test_defaults_to_the_current_directory(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = repo / "docs"
    sub.mkdir()
    monkeypatch.chdir(sub)
    assert find_repo().worktree == repo


def test_relative_start(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(repo / "a")
    found = find_repo("b")
    assert found.worktree == repo
    assert found.worktree.is_absolute()


def test_nearest_repository_wins(repo: Path) -> None:
    nested = make_repo(repo / "vendor" / "lib", mode=None)
    (nested / "src").mkdir()
    assert find_repo(nested / "src").worktree == nested
    assert find_repo(repo / "vendor").worktree == repo


def test_linked_worktree_uses_the_main_worktrees_lock_root(repo: Path, tmp_path: Path) -> None:
    wt = add_worktree(committed(repo), tmp_path / "wt")
    (wt / "sub").mkdir()
    found = find_repo(wt / "sub")
    assert found.worktree == wt
    assert found.git_dir.resolve() == (repo / ".git" / "worktrees" / "wt").resolve()
    assert found.common_dir.resolve() == (repo / ".git").resolve()
    assert found.main_worktree.resolve() == repo.resolve()
    assert found.lock_root.resolve() == (repo / ".orc" / "tasks").resolve()
    assert found.local_dir.resolve() == (repo / ".orc" / "local").resolve()
    # committed state and the shared config come from the worktree's own checkout
    assert found.shared_dir == wt / ".orc" / "shared"
    assert found.tasks_dir == wt / ".orc" / "tasks"


def test_worktree_gitfile_with_a_relative_path(repo: Path, tmp_path: Path) -> None:
    wt = add_worktree(committed(repo), tmp_path / "wt")
    gitdir = repo / ".git" / "worktrees" / "wt"
    (wt / ".git").write_text(f"gitdir: {os.path.relpath(gitdir, wt)}\n")
    found = find_repo(wt)
    assert found.git_dir.resolve() == gitdir.resolve()
    assert found.main_worktree.resolve() == repo.resolve()


def test_two_worktrees_share_one_lock_root(repo: Path, tmp_path: Path) -> None:
    committed(repo)
    one = add_worktree(repo, tmp_path / "one", "b1")
    two = add_worktree(repo, tmp_path / "two", "b2")
    roots = {find_repo(p).lock_root.resolve() for p in (repo, one, two)}
    assert roots == {(repo / ".orc" / "tasks").resolve()}


def test_cli_in_a_worktree_locks_in_the_main_worktree(repo: Path, tmp_path: Path) -> None:
    wt = add_worktree(committed(repo), tmp_path / "wt")
    code, out = orc_json("lock", "acquire", "T", cwd=wt)
    assert code == 0, out
    assert out["mode"] == "p2p"
    assert lock_path(repo, "T").is_file()
    assert not (wt / ".orc" / "tasks" / "T").exists()

    code, out = orc_json("lock", "status", "T", cwd=repo)
    assert code == 0
    assert out["lock"]["locked"] is True and out["lock"]["stale"] is False
    assert out["lock"]["pid"] == os.getpid()

    proc = orc_elsewhere("lock", "acquire", "T", "--json", cwd=repo)
    assert proc.returncode == 1  # another holder, in the main worktree, is refused
    assert json.loads(proc.stdout)["error"]["code"] == "LOCK_HELD"

    code, out = orc_json("lock", "release", "T", cwd=repo)
    assert code == 0 and out["released"] is True
    assert not leased(repo, "T")


def test_local_config_of_the_main_worktree_applies_in_a_linked_worktree(
        repo: Path, tmp_path: Path) -> None:
    wt = add_worktree(committed(repo), tmp_path / "wt")
    (repo / ".orc" / "local" / "config.yaml").write_text("lock: {ttl: 7}\n")
    config = Context.discover(wt).config
    assert config.ttl == 7
    assert config.sources["lock.ttl"] == str(find_repo(wt).local_dir / "config.yaml")


def test_separate_git_dir_and_its_worktrees_agree_on_one_lock_root(tmp_path: Path) -> None:
    """git itself cannot name the main worktree of a clone whose git dir lives elsewhere, so
    the only thing every worktree can agree on is the git dir: what matters is that they do."""
    work = tmp_path / "work"
    git("init", "-q", "-b", "main", "--separate-git-dir", str(tmp_path / "store.git"),
        str(work), cwd=tmp_path)
    (work / "sub").mkdir()
    (work / "f").write_text("x")
    committed(work)
    linked = add_worktree(work, tmp_path / "linked")
    main, other = find_repo(work / "sub"), find_repo(linked)
    assert main.worktree == work and other.worktree == linked
    assert main.git_dir.resolve() == (tmp_path / "store.git").resolve()
    assert main.lock_root.resolve() == other.lock_root.resolve()
    assert main.local_dir.resolve() == other.local_dir.resolve()


def test_worktrees_of_a_bare_clone_share_a_lock_root(repo: Path, tmp_path: Path) -> None:
    committed(repo)
    bare = tmp_path / "bare.git"
    git("clone", "-q", "--bare", str(repo), str(bare), cwd=tmp_path)
    one = tmp_path / "one"
    two = tmp_path / "two"
    git("worktree", "add", "-q", "-b", "b1", str(one), cwd=bare)
    git("worktree", "add", "-q", "-b", "b2", str(two), cwd=bare)
    r1, r2 = find_repo(one), find_repo(two)
    assert r1.lock_root.resolve() == r2.lock_root.resolve()
    assert r1.worktree == one and r2.worktree == two
    # nothing but the bare clone is shared by both: clone-wide state lives there
    assert r1.lock_root.resolve().is_relative_to(bare.resolve())


def test_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain" / "dir"
    plain.mkdir(parents=True)
    assert not any((p / ".git").exists() for p in (plain, *plain.parents))
    with pytest.raises(NotARepository) as err:
        find_repo(plain)
    assert err.value.exit_code == EXIT_USAGE
    assert str(plain) in err.value.message
    assert "git init" in err.value.message


@pytest.mark.parametrize("args", [("lock", "status", "T"), ("lock", "acquire", "T"),
                                  ("lock", "list"), ("mode",)])
def test_cli_outside_a_repository(tmp_path: Path, args: tuple[str, ...]) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    before = tree_snapshot(tmp_path)
    code, out = orc_json(*args, cwd=plain)
    assert code == 2
    assert out["error"]["code"] == "NOT_A_REPOSITORY"
    assert tree_snapshot(tmp_path) == before

    proc = orc(*args, cwd=plain)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "not inside a git repository" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("content", ["garbage\n", "", "gitdir:", "gitdir: ../nowhere\n",
                                     "gitdir: /nonexistent/repo/.git/worktrees/x\n"])
def test_a_bad_git_file_is_not_a_repository(tmp_path: Path, content: str) -> None:
    """Junk, or a worktree whose repository was moved or deleted (git refuses it too)."""
    top = tmp_path / "broken"
    top.mkdir()
    (top / ".git").write_text(content)
    with pytest.raises(NotARepository) as err:
        find_repo(top)
    assert str(top / ".git") in err.value.message
    code, out = orc_json("lock", "status", "T", cwd=top)
    assert code == 2
    assert out["error"]["code"] == "NOT_A_REPOSITORY"
    assert sorted(p.name for p in top.iterdir()) == [".git"]


def test_worktree_of_a_deleted_repository(repo: Path, tmp_path: Path) -> None:
    wt = add_worktree(committed(repo), tmp_path / "wt")
    import shutil

    shutil.rmtree(repo / ".git")
    with pytest.raises(NotARepository):
        find_repo(wt)
