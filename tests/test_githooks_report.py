"""The installed hooks at work: two people sharing a bare remote, real pulls, rebases, pushes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import git, orc
from hostile import assert_no_raw

from orc_git.context import Context
from orc_git.locking import lockyaml
from orc_git.locking.filelocker import FileLocker
from orc_git.locking.info import LockInfo


@dataclass
class Person:
    name: str
    clone: Path
    env: dict[str, str]

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["git", *args], cwd=self.clone, env=self.env, capture_output=True,
                              text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"git {args} failed: {proc.stderr}")
        return proc

    def orc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return orc(*args, cwd=self.clone, env=self.env)

    def commit_state(self, task: str, *state: str, message: str = "state") -> None:
        if not (self.clone / ".orc/tasks" / task / "task.yaml").exists():
            assert self.orc("task", "new", task).returncode == 0
        proc = self.orc("task", "state", task, *state)
        assert proc.returncode == 0, proc.stderr
        self.git("add", "-A")
        self.git("commit", "-qm", message)


def person(tmp_path: Path, name: str, remote: Path) -> Person:
    home = tmp_path / f"{name}-home"
    home.mkdir()
    (home / "config.yaml").write_text(f"identity: {{user: {name}}}\n")
    env = {**os.environ, "ORC_HOME": str(home), "GIT_AUTHOR_NAME": name,
           "GIT_COMMITTER_NAME": name}
    clone = tmp_path / name
    subprocess.run(["git", "clone", "-q", str(remote), str(clone)], check=True, env=env,
                   capture_output=True, timeout=60)
    p = Person(name, clone, env)
    assert p.orc("hooks", "install").returncode == 0
    return p


@pytest.fixture
def team(tmp_path: Path) -> tuple[Person, Person]:
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp_path)
    seed = tmp_path / "seed"
    git("clone", "-q", str(remote), str(seed), cwd=tmp_path)
    git("checkout", "-q", "-b", "main", cwd=seed)
    assert orc("init", "--mode", "p2p", cwd=seed).returncode == 0
    git("add", "-A", cwd=seed)
    git("commit", "-qm", "orc init", cwd=seed)
    git("push", "-q", "origin", "main", cwd=seed)
    return person(tmp_path, "alice", remote), person(tmp_path, "bob", remote)


def test_pull_reports_what_alice_committed(team: tuple[Person, Person]) -> None:
    alice, bob = team
    alice.commit_state("T-1", "--status", "running", "--phase", "implement", "--iteration", "2")
    alice.git("push", "-q", "origin", "main")
    pulled = bob.git("pull", "-q", "--no-rebase")
    assert "task state changed in what post-merge brought" in pulled.stderr
    assert "T-1: running / implement / iteration 2 by alice@" in pulled.stderr
    assert "running elsewhere" not in pulled.stderr  # already reported as arrived


def test_pull_rebase_reports_through_post_rewrite(team: tuple[Person, Person]) -> None:
    alice, bob = team
    alice.commit_state("T-1", "--status", "running")
    alice.git("push", "-q", "origin", "main")
    bob.commit_state("T-2", "--status", "paused")
    pulled = bob.git("pull", "-q", "--rebase")
    assert "post-rewrite brought" in pulled.stderr
    assert "T-1: running by alice@" in pulled.stderr
    assert "T-2" not in pulled.stderr.split("brought:")[1].split("running elsewhere")[0]


def test_checkout_reports_running_elsewhere_and_is_quiet_otherwise(
        team: tuple[Person, Person]) -> None:
    alice, bob = team
    quiet = bob.git("checkout", "-q", "-b", "side")
    assert quiet.stderr == ""  # nothing to say: say nothing
    alice.commit_state("T-1", "--status", "running", "--phase", "test")
    alice.git("push", "-q", "origin", "main")
    bob.git("fetch", "-q")
    switched = bob.git("checkout", "-q", "origin/main")
    assert "T-1: running / test by alice@" in switched.stderr
    back = bob.git("checkout", "-q", "side")
    assert "T-1: removed" in back.stderr  # it changed again (disappeared) in this checkout
    again = bob.git("checkout", "-q", "origin/main")
    assert "T-1: running / test by alice@" in again.stderr  # and back again


def test_broken_state_file_never_fails_a_checkout(team: tuple[Person, Person]) -> None:
    alice, bob = team
    alice.commit_state("T-1", "--status", "running")
    (alice.clone / ".orc/tasks/T-1/state.yaml").write_text("status: [broken\n")
    alice.git("commit", "-qam", "broken state")
    alice.git("push", "-q", "origin", "main")
    pulled = bob.git("pull", "-q", "--no-rebase")
    assert pulled.returncode == 0
    assert "T-1: " in pulled.stderr and "unreadable" in pulled.stderr
    assert "Traceback" not in pulled.stderr


def test_stale_local_lease_is_reported_with_the_cleanup_command(
        team: tuple[Person, Person]) -> None:
    _, bob = team
    ctx = Context.discover(bob.clone)
    dead = subprocess.Popen(["true"])
    dead.wait()
    locker = FileLocker(ctx.repo.lock_root, ctx.holder(dead.pid), ttl=60)
    locker.acquire("T-9")
    switched = bob.git("checkout", "-q", "-b", "other")
    assert "stale local leases" in switched.stderr and "orc lock clean" in switched.stderr
    assert "T-9: holder-dead" in switched.stderr


def test_pre_commit_refuses_lock_files_and_foreign_locked_state(
        team: tuple[Person, Person], tmp_path: Path) -> None:
    alice, bob = team
    lease_file = bob.clone / ".orc/tasks/T-1/lock.yaml"
    lease_file.parent.mkdir(parents=True)
    lease_file.write_text("task_id: T-1\n")
    bob.git("add", "-f", str(lease_file))
    refused = bob.git("commit", "-qm", "oops", check=False)
    assert refused.returncode != 0 and "refusing to commit lease files" in refused.stderr
    bob.git("rm", "-q", "--cached", str(lease_file))
    lease_file.unlink()
    # The clone's lock domain id is local too: committed, clones would share one domain.
    assert bob.orc("lock", "acquire", "T-0").returncode == 0
    assert bob.orc("lock", "release", "T-0").returncode == 0
    bob.git("add", "-f", ".orc/local/lock-domain")
    refused = bob.git("commit", "-qm", "oops", check=False)
    assert refused.returncode != 0 and ".orc/local/lock-domain" in refused.stderr
    bob.git("rm", "-q", "--cached", ".orc/local/lock-domain")
    # alice holds T-2's lease in bob's clone (same machine, shared directory)
    holder = subprocess.Popen(["sleep", "60"])
    try:
        alice_ctx = Context.discover(alice.clone)
        FileLocker(Context.discover(bob.clone).repo.lock_root,
                   alice_ctx.holder(holder.pid), ttl=60).acquire("T-2")
        assert bob.orc("task", "new", "T-2").returncode == 0
        assert bob.orc("task", "state", "T-2", "--status", "running", "--force").returncode == 0
        bob.git("add", "-A")
        refused = bob.git("commit", "-qm", "state of a task alice holds", check=False)
        assert refused.returncode == 1
        assert "locked by someone else" in refused.stderr and "ORC_ALLOW_LOCKED=1" in refused.stderr
        bob.env["ORC_ALLOW_LOCKED"] = "1"
        assert bob.git("commit", "-qm", "overridden").returncode == 0
    finally:
        holder.kill()
        holder.wait()


def test_pre_push_refuses_state_of_a_task_locked_by_someone_else(
        team: tuple[Person, Person]) -> None:
    alice, bob = team
    bob.commit_state("T-3", "--status", "running")
    holder = subprocess.Popen(["sleep", "60"])
    try:
        FileLocker(Context.discover(bob.clone).repo.lock_root,
                   Context.discover(alice.clone).holder(holder.pid), ttl=60).acquire("T-3")
        refused = bob.git("push", "-q", "origin", "main", check=False)
        assert refused.returncode != 0
        assert "this push changes the state" in refused.stderr and "T-3" in refused.stderr
        assert "ORC_ALLOW_LOCKED=1 git push" in refused.stderr
        bob.env["ORC_ALLOW_LOCKED"] = "1"
        assert bob.git("push", "-q", "origin", "main").returncode == 0
    finally:
        holder.kill()
        holder.wait()


def test_pre_run_script(team: tuple[Person, Person]) -> None:
    alice, bob = team
    script = Path(__file__).resolve().parent.parent / "hooks" / "pre-run"
    env = {**bob.env, "ORC_PYTHON": sys.executable}

    def pre_run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(script), "T-1"], cwd=bob.clone, env=env,
                              capture_output=True, text=True, timeout=60)

    assert pre_run().returncode == 0
    holder = subprocess.Popen(["sleep", "60"])
    try:
        FileLocker(Context.discover(bob.clone).repo.lock_root,
                   Context.discover(alice.clone).holder(holder.pid), ttl=60).acquire("T-1")
        refused = pre_run()
        assert refused.returncode == 1 and "(alice@" in refused.stderr
    finally:
        holder.kill()
        holder.wait()
    assert pre_run().returncode == 0  # the holder died: its lease is stale


def test_hooks_do_nothing_with_orc_hooks_0(team: tuple[Person, Person]) -> None:
    alice, bob = team
    alice.commit_state("T-1", "--status", "running")
    alice.git("push", "-q", "origin", "main")
    bob.env["ORC_HOOKS"] = "0"
    pulled = bob.git("pull", "-q", "--no-rebase")
    assert "orc:" not in pulled.stderr


def test_plugins_add_lines_to_every_report(team: tuple[Person, Person], tmp_path: Path) -> None:
    from test_plugins import install_plugin

    alice, bob = team
    site = tmp_path / "site"
    site.mkdir()
    install_plugin(site, "reportplug", """
        from orc_git import hookimpl

        @hookimpl
        def orc_git_hook_report(hook, context):
            return [f"reportplug says hello from {hook} in {context.mode} mode"]
    """)
    bob.env["PYTHONPATH"] = str(site)
    switched = bob.git("checkout", "-q", "-b", "feature")
    assert "reportplug says hello from post-checkout in p2p mode" in switched.stderr
    alice.commit_state("T-1", "--status", "running")
    alice.git("push", "-q", "origin", "main")
    bob.git("checkout", "-q", "main")
    pulled = bob.git("pull", "-q", "--no-rebase")
    assert "reportplug says hello from post-merge" in pulled.stderr


def test_reports_in_a_linked_worktree(team: tuple[Person, Person], tmp_path: Path) -> None:
    alice, bob = team
    alice.commit_state("T-1", "--status", "running", "--phase", "review")
    alice.git("push", "-q", "origin", "main")
    bob.git("fetch", "-q")
    wt = tmp_path / "bob-wt"
    bob.git("worktree", "add", "-q", "--detach", str(wt), "main")
    switched = subprocess.run(["git", "checkout", "-q", "origin/main"], cwd=wt, env=bob.env,
                              capture_output=True, text=True, timeout=60)
    assert switched.returncode == 0
    assert "T-1: running / review by alice@" in switched.stderr


# -- terminal injection through committed state (issue 8, point 10) ---------------------------

FAKE = "x\n\x1b[31morc: fake line\u202e"
SHOWN = "x\\n\\x1b[31morc: fake line\\u202e"


def _commit_hostile_state(alice: Person, task: str) -> None:
    """What a teammate's tool (not orc, which refuses such a phase) can commit and push."""
    assert alice.orc("task", "new", task).returncode == 0
    path = alice.clone / ".orc/tasks" / task / "state.yaml"
    q = json.dumps
    path.write_text(f'task_id: {q(task)}\nstatus: "running"\nphase: {q(FAKE)}\n'
                    f'iteration: 1\nupdated_at: "2024-05-01T10:00:00Z"\n'
                    f'updated_by: {q("mallory" + FAKE)}\nhost: {q("h" + FAKE)}\ntoken: 3\n')
    alice.git("add", "-A")
    alice.git("commit", "-qm", "hostile state")
    alice.git("push", "-q", "origin", "main")


def test_hostile_committed_state_is_escaped_in_every_post_hook_report(
        team: tuple[Person, Person]) -> None:
    alice, bob = team
    _commit_hostile_state(alice, "T-1")
    bob.git("fetch", "-q")
    switched = bob.git("checkout", "-q", "origin/main")  # post-checkout
    assert "T-1: running / " + SHOWN in switched.stderr, switched.stderr
    assert "by mallory" + SHOWN + "@h" + SHOWN in switched.stderr
    assert_no_raw(switched.stderr)
    bob.git("checkout", "-q", "main")
    pulled = bob.git("pull", "-q", "--no-rebase")  # post-merge
    assert "T-1: running / " + SHOWN in pulled.stderr, pulled.stderr
    assert_no_raw(pulled.stderr)
    other = bob.git("checkout", "-q", "-b", "side")  # "running elsewhere"
    assert "running elsewhere" in other.stderr and SHOWN in other.stderr, other.stderr
    assert_no_raw(other.stderr)
    for args in (("tasks",), ("task", "show", "T-1")):
        shown = bob.orc(*args)
        assert shown.returncode == 0 and SHOWN in shown.stdout, shown.stdout + shown.stderr
        assert_no_raw(shown.stdout + shown.stderr)


def test_hostile_lease_is_escaped_in_pre_commit_and_pre_push_refusals(
        team: tuple[Person, Person]) -> None:
    _, bob = team
    bob.commit_state("T-2", "--status", "running")
    lease = LockInfo(task_id="T-2", locked=True, owner="eve" + FAKE + "@elsewhere",
                     user="eve", host="elsewhere", pid=4242, pid_started=1700000000.0,
                     acquired_at="2024-05-01T10:00:00Z", heartbeat_at="2024-05-01T10:00:30Z",
                     ttl=600, token=5, host_id="elsewhere/1700000000/1",
                     display_name="Eve" + FAKE)
    (bob.clone / ".orc/tasks/T-2/lock.yaml").write_bytes(lockyaml.render(lease))
    refused = bob.git("push", "-q", "origin", "main", check=False)  # pre-push
    assert refused.returncode != 0 and "this push changes the state" in refused.stderr
    assert "Eve" + SHOWN + " (eve" + SHOWN + "@elsewhere)" in refused.stderr, refused.stderr
    assert_no_raw(refused.stderr)
    (bob.clone / ".orc/tasks/T-2/state.yaml").write_text(
        (bob.clone / ".orc/tasks/T-2/state.yaml").read_text().replace("running", "paused"))
    bob.git("add", "-A")
    refused = bob.git("commit", "-qm", "state of a task eve holds", check=False)  # pre-commit
    assert refused.returncode == 1 and "locked by someone else" in refused.stderr
    assert "Eve" + SHOWN in refused.stderr, refused.stderr
    assert_no_raw(refused.stderr)
