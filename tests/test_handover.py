"""Handing a task over through git, in p2p: the tombstone records the releaser's HEAD, and the
next acquirer is told (warned, ``behind`` in JSON, refused with --require-latest, offered a
merge on a terminal) when its own HEAD lacks it.  Real repositories and worktrees throughout."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import git, identity_env, lock_path, make_repo, orc
from lockcli import one_json, tty_orc

import orc_git
from orc_git.context import Context
from orc_git.errors import Behind
from orc_git.handover import Handover, parse_head_line
from orc_git.repo import find_repo


def commit(where: Path, message: str, path: str | None = None, text: str = "") -> str:
    if path is not None:
        (where / path).write_text(text or message)
        git("add", path, cwd=where)
        git("commit", "-q", "-m", message, cwd=where)
    else:
        git("commit", "-q", "--allow-empty", "-m", message, cwd=where)
    return git("rev-parse", "HEAD", cwd=where).strip()


def tombstone_head(repo: Path, task: str) -> dict[str, object]:
    raw = lock_path(repo, task).read_bytes()
    assert raw.startswith(b"released: true"), raw
    line = next(x for x in raw.decode().splitlines() if x.startswith("head: "))
    head = json.loads(line[len("head: "):])
    assert isinstance(head, dict)
    return head


@pytest.fixture
def worktrees(tmp_path: Path) -> tuple[Path, Path]:
    """A p2p repository (on main) and a second worktree of it on the branch feature."""
    main = make_repo(tmp_path / "main")
    (main / ".gitignore").write_text(".orc/tasks/\n.orc/local/\n")
    git("add", "-A", cwd=main)
    git("commit", "-q", "-m", "base", cwd=main)
    feature = tmp_path / "feature"
    git("worktree", "add", "-q", "-b", "feature", str(feature), cwd=main)
    return main, feature


def run_and_commit(where: Path, task: str, message: str, env: dict[str, str] | None = None,
                   ) -> str:
    """`orc lock run TASK -- git commit …`: a run that leaves a commit behind."""
    proc = orc("lock", "run", task, "--", "git", "commit", "-q", "--allow-empty", "-m",
               message, cwd=where, env=env)
    assert proc.returncode == 0, proc.stderr
    return git("rev-parse", "HEAD", cwd=where).strip()


def test_a_release_records_the_holders_head_and_branch(worktrees: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    main, feature = worktrees
    sha = run_and_commit(feature, "T-1", "feature work", identity_env(tmp_path, "bob"))
    head = tombstone_head(main, "T-1")  # leases live in the main worktree
    assert head["commit"] == sha and head["branch"] == "feature"
    assert str(head["by"]).startswith("bob@") and isinstance(head["at"], str)


def test_the_branch_recorded_is_the_upstream_when_one_is_set(tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp_path)
    clone = make_repo(tmp_path / "clone")
    commit(clone, "base")
    git("remote", "add", "origin", str(remote), cwd=clone)
    git("push", "-q", "-u", "origin", "main", cwd=clone)
    assert orc("lock", "run", "T-2", "--", "true", cwd=clone).returncode == 0
    assert tombstone_head(clone, "T-2")["branch"] == "origin/main"


def test_acquiring_behind_the_last_holder_warns_says_so_in_json_and_can_refuse(
        worktrees: tuple[Path, Path], tmp_path: Path) -> None:
    main, feature = worktrees
    sha = run_and_commit(feature, "T-3", "feature work", identity_env(tmp_path, "bob"))

    proc = orc("lock", "acquire", "T-3", cwd=main)
    assert proc.returncode == 0, proc.stderr
    assert "its last holder, bob@" in proc.stderr and sha[:12] in proc.stderr
    assert "fetch and merge feature" in proc.stderr
    assert orc("lock", "release", "T-3", cwd=main).returncode == 0

    out = one_json(orc("lock", "acquire", "T-3", "--json", cwd=main))
    assert out["acquired"] is True
    assert out["behind"]["commit"] == sha and out["behind"]["branch"] == "feature"
    assert out["behind"]["by"].startswith("bob@")
    assert orc("lock", "release", "T-3", cwd=main).returncode == 0
    # Released without merging: the tombstone still names Bob's commit, not this HEAD.
    assert tombstone_head(main, "T-3")["commit"] == sha

    proc = orc("lock", "acquire", "T-3", "--require-latest", "--json", cwd=main)
    assert proc.returncode == 1
    out = one_json(proc)
    assert out["error"]["code"] == "BEHIND" and out["acquired"] is False
    assert out["behind"]["commit"] == sha
    assert orc("lock", "status", "T-3", cwd=main).stdout.startswith("T-3: not locked")
    assert tombstone_head(main, "T-3")["commit"] == sha  # the refusal kept what Bob left

    git("merge", "-q", "--no-edit", "feature", cwd=main)
    proc = orc("lock", "acquire", "T-3", "--require-latest", "--json", cwd=main)
    assert proc.returncode == 0, proc.stderr
    assert one_json(proc)["behind"] is None and "last holder" not in proc.stderr


def test_lock_require_latest_in_config_refuses_orc_run_and_lock_run(
        worktrees: tuple[Path, Path]) -> None:
    main, feature = worktrees
    run_and_commit(feature, "T-4", "feature work")
    (main / ".orc" / "local" / "config.yaml").write_text("lock: {require_latest: true}\n")
    for argv in (("lock", "run", "T-4"), ("run", "T-4")):
        proc = orc(*argv, "--", "touch", "ran", cwd=main)
        assert proc.returncode == 1, proc.stderr
        assert "refused" in proc.stderr and "last holder" in proc.stderr
        assert not (main / "ran").exists()  # the command never ran
    proc = orc("lock", "run", "T-4", "--", "true", cwd=feature)
    assert proc.returncode == 0, proc.stderr  # the worktree that has the commit goes ahead


def test_orc_run_warns_and_goes_ahead_without_require_latest(
        worktrees: tuple[Path, Path]) -> None:
    main, feature = worktrees
    sha = run_and_commit(feature, "T-5", "feature work")
    proc = orc("run", "T-5", "--", "true", cwd=main)
    assert proc.returncode == 0, proc.stderr
    assert sha[:12] in proc.stderr and "does not contain" in proc.stderr


def test_a_detached_head_holder_is_named_by_its_commit(worktrees: tuple[Path, Path]) -> None:
    main, feature = worktrees
    git("checkout", "-q", "--detach", cwd=feature)
    sha = commit(feature, "detached work")
    assert orc("lock", "run", "T-6", "--", "true", cwd=feature).returncode == 0
    assert tombstone_head(main, "T-6") | {"by": None, "at": None} == {
        "commit": sha, "branch": None, "by": None, "at": None}
    proc = orc("lock", "acquire", "T-6", "--json", cwd=main)
    out = one_json(proc)
    assert out["behind"] == {"commit": sha, "branch": None, "by": out["behind"]["by"]}
    assert f"fetch and merge commit {sha[:12]}" in proc.stderr


def test_a_commit_gone_from_the_repository_counts_as_behind(worktrees: tuple[Path, Path],
                                                            ) -> None:
    main, feature = worktrees
    sha = run_and_commit(feature, "T-7", "work that will be thrown away")
    git("worktree", "remove", "--force", str(feature), cwd=main)
    git("branch", "-D", "feature", cwd=main)
    git("reflog", "expire", "--expire=now", "--all", cwd=main)
    git("gc", "-q", "--prune=now", cwd=main)
    assert subprocess.run(["git", "cat-file", "-e", sha], cwd=main).returncode != 0
    out = one_json(orc("lock", "acquire", "T-7", "--json", cwd=main))
    assert out["behind"]["commit"] == sha


def test_the_same_holder_with_the_same_head_is_not_behind(worktrees: tuple[Path, Path]) -> None:
    main, _ = worktrees
    assert orc("lock", "run", "T-8", "--", "true", cwd=main).returncode == 0
    proc = orc("lock", "acquire", "T-8", "--json", cwd=main)
    assert one_json(proc)["behind"] is None and "last holder" not in proc.stderr


def test_orc_lock_release_from_another_process_records_the_head(
        worktrees: tuple[Path, Path]) -> None:
    main, feature = worktrees
    assert orc("lock", "acquire", "T-9", cwd=feature).returncode == 0
    sha = commit(feature, "work under a shell's lease")
    assert orc("lock", "release", "T-9", cwd=feature).returncode == 0
    assert tombstone_head(main, "T-9")["commit"] == sha


def test_hold_warns_sets_lease_behind_and_refuses_when_required(
        worktrees: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    main, feature = worktrees
    sha = run_and_commit(feature, "T-10", "feature work")
    with (caplog.at_level(logging.WARNING, logger="orc_git.lease"),
          orc_git.hold("T-10", context=Context.discover(main)) as lease):
        assert lease.behind is not None and lease.behind.commit == sha
    assert any(sha[:12] in r.getMessage() for r in caplog.records)
    with (pytest.raises(Behind) as caught,
          orc_git.hold("T-10", context=Context.discover(main), require_latest=True)):
        raise AssertionError("entered while behind")
    assert caught.value.head is not None and caught.value.head.commit == sha
    assert orc("lock", "status", "T-10", cwd=main).stdout.startswith("T-10: not locked")
    with orc_git.hold("T-10", context=Context.discover(feature), require_latest=True) as lease:
        assert lease.behind is None


def test_a_head_that_is_no_object_id_is_ignored(repo: Path) -> None:
    """Tombstones are files anyone can write: a head that is not a full hex id never reaches
    git as an argument."""
    commit(repo, "base")
    assert orc("lock", "run", "T-11", "--", "true", cwd=repo).returncode == 0
    path = lock_path(repo, "T-11")
    raw = path.read_bytes()
    start = raw.index(b"\nhead: ") + 1
    path.write_bytes(raw[:start] + b'head: {"commit": "--upload-pack=touch pwned", '
                     b'"branch": "-x"}\n')
    assert parse_head_line(path.read_bytes()) is None
    proc = orc("lock", "acquire", "T-11", "--json", cwd=repo)
    assert one_json(proc)["behind"] is None
    assert not (repo / "pwned").exists()


def test_handover_lacking_answers_for_many_commits_at_once(worktrees: tuple[Path, Path]) -> None:
    main, feature = worktrees
    base = git("rev-parse", "HEAD", cwd=main).strip()
    ahead = [commit(feature, f"f{i}") for i in range(3)]
    handover = Handover(find_repo(main))
    unknown = "ab" * 20
    assert handover.lacking([base, *ahead, unknown, "not-a-sha"]) == {*ahead, unknown}
    assert Handover(find_repo(feature)).lacking([base, *ahead]) == set()


def test_the_hook_report_names_tasks_left_behind(worktrees: tuple[Path, Path]) -> None:
    main, feature = worktrees
    assert orc("hooks", "install", cwd=main).returncode == 0
    sha = run_and_commit(feature, "T-12", "feature work")
    run_and_commit(main, "T-13", "main work")  # released here: nothing to report
    proc = subprocess.run(["git", "checkout", "-q", "-b", "other"], cwd=main,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "last holder left commits this checkout lacks" in proc.stderr
    assert f"T-12: {sha[:12]} on feature" in proc.stderr and "T-13" not in proc.stderr
    script = Path(__file__).resolve().parent.parent / "hooks" / "pre-run"
    env = {**os.environ, "ORC_PYTHON": sys.executable}
    proc = subprocess.run([str(script), "T-12"], cwd=main, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "warning: T-12: its last holder" in proc.stderr
    (main / ".orc" / "local" / "config.yaml").write_text("lock: {require_latest: true}\n")
    proc = subprocess.run([str(script), "T-12"], cwd=main, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and "lock.require_latest is set" in proc.stderr


def test_the_terminal_offer_merges_then_takes_the_task(worktrees: tuple[Path, Path]) -> None:
    main, feature = worktrees
    sha = run_and_commit(feature, "T-14", "feature work")
    with tty_orc("lock", "acquire", "T-14", cwd=main) as (proc, tty):
        tty.until("[Y/n]")
        os.write(tty.fd, b"\n")
        assert proc.wait(60) == 0, tty.rest()
        text = tty.rest()
    assert "merged feature" in text and "acquired T-14" in text
    assert text.count("does not contain") == 1  # warned once, before the offer; not after
    assert subprocess.run(["git", "merge-base", "--is-ancestor", sha, "HEAD"],
                          cwd=main).returncode == 0


def test_a_conflicting_merge_stops_and_leaves_the_repository_as_git_left_it(
        worktrees: tuple[Path, Path]) -> None:
    main, feature = worktrees
    proc = orc("lock", "run", "T-15", "--", "sh", "-c",
               "echo theirs > f && git add f && git commit -qm theirs", cwd=feature)
    assert proc.returncode == 0, proc.stderr
    commit(main, "ours", "f", "ours\n")
    with tty_orc("lock", "run", "T-15", "--", "touch", "ran", cwd=main) as (proc, tty):
        tty.until("[Y/n]")
        os.write(tty.fd, b"y\n")
        assert proc.wait(60) == 1, tty.rest()
        text = tty.rest()
    assert "failed" in text and "left as git left it" in text
    assert (find_repo(main).git_dir / "MERGE_HEAD").exists()  # mid-merge, as git leaves it
    assert "<<<<<<<" in (main / "f").read_text()
    assert not (main / "ran").exists()
    assert orc("lock", "status", "T-15", cwd=main).stdout.startswith("T-15: not locked")


def test_last_head_round_trips_through_a_lease_and_a_bad_one_is_only_dropped() -> None:
    from orc_git.handover import Head
    from orc_git.locking import lockyaml
    from orc_git.locking.info import LockInfo

    head = Head("ab" * 20, "origin/main", "bob@box", "2026-12-03T08:19:21Z")
    info = LockInfo("T", owner="alice@box", user="alice", host="box", pid=1, pid_started=1.0,
                    acquired_at="2026-12-03T08:19:21Z", heartbeat_at="2026-12-03T08:19:21Z",
                    ttl=60, token=3, last_head=head)
    raw = lockyaml.render(info)
    assert lockyaml.parse(raw, "T").last_head == head
    bad = raw.replace(b'"commit": "' + b"ab" * 20, b'"commit": "-x')
    parsed = lockyaml.parse(bad, "T")  # still a readable, live lease
    assert parsed.last_head is None and parsed.token == 3
    tomb = lockyaml.tombstone(info, head._replace(by="carol@box"))
    assert tomb.startswith(lockyaml.DEAD)
    assert parse_head_line(tomb) == head._replace(by="carol@box")


def test_a_forced_release_of_another_holders_lease_keeps_the_head_it_was_handed(
        worktrees: tuple[Path, Path], tmp_path: Path) -> None:
    main, feature = worktrees
    sha = run_and_commit(feature, "T-16", "feature work")
    bob = identity_env(tmp_path, "bob")
    assert orc("lock", "acquire", "T-16", cwd=main, env=bob).returncode == 0  # handed sha
    done = orc("lock", "release", "T-16", "--force", cwd=feature)  # alice, not the holder
    assert done.returncode == 0, done.stderr
    assert tombstone_head(main, "T-16")["commit"] == sha


def test_a_renewed_lease_still_records_its_head(worktrees: tuple[Path, Path]) -> None:
    main, _ = worktrees
    sha = git("rev-parse", "HEAD", cwd=main).strip()
    with orc_git.hold("T-17", context=Context.discover(main)) as lease:
        lease.locker.heartbeat("T-17")  # the lease file is replaced, then released in place
    assert tombstone_head(main, "T-17")["commit"] == sha
    sizes = []
    for _ in range(3):  # steady cycles: a grant writes over its tombstone, never shorter
        with orc_git.hold("T-17", context=Context.discover(main)):
            sizes.append(lock_path(main, "T-17").stat().st_size)
        sizes.append(lock_path(main, "T-17").stat().st_size)
    assert sizes[1:] == [sizes[1]] * 5, sizes
    assert tombstone_head(main, "T-17")["commit"] == sha


def test_declining_the_offer_goes_on_behind(worktrees: tuple[Path, Path]) -> None:
    main, feature = worktrees
    sha = run_and_commit(feature, "T-18", "feature work")
    before = git("rev-parse", "HEAD", cwd=main).strip()
    with tty_orc("lock", "run", "T-18", "--", "touch", "ran", cwd=main,
                 other_parent=False) as (proc, tty):
        tty.until("[Y/n]")
        os.write(tty.fd, b"n\n")
        assert proc.wait(60) == 0, tty.rest()
    assert (main / "ran").exists()
    assert git("rev-parse", "HEAD", cwd=main).strip() == before != sha


def test_a_holder_in_a_loop_still_sees_another_worktrees_release(
        worktrees: tuple[Path, Path]) -> None:
    """The next cycle of one holder skips reading HEAD only for the head it left itself."""
    main, feature = worktrees
    ctx = Context.discover(main)
    for _ in range(2):
        with orc_git.hold("T-19", context=ctx) as lease:
            assert lease.behind is None
    sha = run_and_commit(feature, "T-19", "feature work")
    with orc_git.hold("T-19", context=ctx) as lease:
        assert lease.behind is not None and lease.behind.commit == sha
