"""Team mode says where an answer came from (issue 11, point 1), and who may release a team
lease (point 3): real servers on loopback, stopped to force the fallback; real ``orc`` commands
for two users sharing one clone."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from orc_git.locking import lockio

from conftest import Lines, ServerFactory, ServerProc, git_repo, run_orc, token, unique

UNSEEN = "cannot be seen while it is unreachable"


class Team:
    """One clone, a server, and the environment of each user (own ORC_HOME, own token)."""

    def __init__(self, server: ServerProc, tmp_path: Path) -> None:
        self.server = server
        self.repo = git_repo(tmp_path / "repo")
        self.tmp = tmp_path

    def env(self, user: str) -> dict[str, str]:
        home = self.tmp / f"home-{user}"
        home.mkdir(exist_ok=True)
        (home / "config.yaml").write_text(f"identity: {{user: {user}}}\n")
        return {"ORC_HOME": str(home), "ORC_MODE": "team",
                "ORC_TEAM_URL": f"ws://{self.server.base}", "ORC_TEAM_TOKEN": token(user)}

    def orc(self, user: str, *args: str) -> subprocess.CompletedProcess[str]:
        return run_orc(*args, cwd=self.repo, env=self.env(user))

    def json(self, user: str, *args: str) -> tuple[subprocess.CompletedProcess[str],
                                                   dict[str, Any]]:
        done = self.orc(user, *args, "--json")
        assert "Traceback" not in done.stderr, done.stderr
        lines = done.stdout.splitlines()
        assert len(lines) == 1, (done.stdout, done.stderr)
        out = json.loads(lines[0])
        assert out["schema"] == 1 and out["mode"] == "team"
        return done, out


@pytest.fixture
def team(start_server: ServerFactory, tmp_path: Path) -> Iterator[Team]:
    server = start_server()
    yield Team(server, tmp_path)
    server.kill()


def test_reads_in_fallback_say_they_come_from_file_leases_only(team: Team) -> None:
    task = unique()
    done, out = team.json("alice", "lock", "acquire", task)
    assert done.returncode == 0 and out["source"] == "team" and out["warnings"] == []
    done, out = team.json("bob", "lock", "status", task)
    assert out["source"] == "team" and out["lock"]["user"] == "alice"
    assert "Source: the team server" in team.orc("bob", "lock", "status", task).stdout

    team.server.stop(signal.SIGKILL)
    for args in (("status", task), ("list",), ("wait", task, "--timeout", "5")):
        done, out = team.json("bob", "lock", *args)
        assert done.returncode == 0, (args, done.stderr)
        assert out["source"] == "file-fallback", (args, out)
        assert len(out["warnings"]) == 1 and UNSEEN in out["warnings"][0], out
        assert UNSEEN in done.stderr, (args, done.stderr)
    assert out["lock"]["locked"] is False  # what the file leases know: alice is not seen

    text = team.orc("bob", "lock", "status", task)
    assert text.returncode == 0
    assert text.stdout.splitlines() == [f"{task}: not locked",
                                        "  Source: this clone's file leases only (the team "
                                        "server is unreachable)"]
    assert UNSEEN in text.stderr

    done, out = team.json("bob", "lock", "acquire", task)
    assert done.returncode == 0 and out["acquired"] is True
    assert out["source"] == "file-fallback" and UNSEEN in out["warnings"][0]
    assert "using the file lease" in done.stderr
    other = unique()
    text = team.orc("bob", "lock", "acquire", other)
    assert text.returncode == 0 and f"acquired {other} by file lease only" in text.stderr


def test_a_refusal_in_fallback_says_where_it_was_decided(team: Team) -> None:
    task = unique()
    team.server.stop(signal.SIGKILL)
    assert team.orc("alice", "lock", "acquire", task).returncode == 0  # a file lease
    done = subprocess.run([sys.executable, "-c", "import subprocess, sys; "
                           "sys.exit(subprocess.call(sys.argv[1:]))", sys.executable, "-m",
                           "orc_git", "lock", "acquire", task, "--json"], cwd=team.repo,
                          env={**os.environ, **team.env("bob")}, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 1, done.stderr
    out = json.loads(done.stdout)
    assert out["error"]["code"] == "LOCK_HELD" and out["acquired"] is False
    assert out["source"] == "file-fallback" and UNSEEN in out["warnings"][0]


def test_another_user_from_the_same_parent_is_another_holder(team: Team) -> None:
    """alice and bob run `orc` from one parent process (this test): one client instance id,
    two holders, on the server and on the fallback's file lease."""
    task = unique()
    assert team.orc("alice", "lock", "acquire", task).returncode == 0
    done, out = team.json("bob", "lock", "release", task)
    assert done.returncode == 1 and out["error"]["code"] == "NOT_OWNER"
    assert team.server.http(f"/api/locks/{task}", token("carol"))[1]["lock"]["owner"] == "alice"

    team.server.stop(signal.SIGKILL)
    fallen = unique()
    assert team.orc("alice", "lock", "acquire", fallen).returncode == 0
    for args in (("release", fallen), ("heartbeat", fallen), ("acquire", fallen)):
        done, out = team.json("bob", "lock", *args)
        assert done.returncode == 1, (args, done.stderr)
        assert out["error"]["code"] in ("NOT_OWNER", "LOCK_HELD"), out
    lease = lockio.read(f"{team.repo}/.orc/tasks/{fallen}", fallen)
    assert lease is not None and lease.user == "alice"


@pytest.fixture
def lock_run(team: Team) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """alice's `orc lock run TASK -- python (waits for stdin)`, holding on the server."""
    task = unique()
    proc = subprocess.Popen([sys.executable, "-m", "orc_git", "lock", "run", task, "--",
                             sys.executable, "-c", "import sys; sys.stdin.read()"],
                            cwd=team.repo, env={**os.environ, **team.env("alice")},
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    Lines(proc.stderr).wait_for(f"holding {task}", timeout=20)
    yield task, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    for stream in (proc.stdin, proc.stderr):
        if stream is not None:
            stream.close()


def test_a_lock_run_lease_on_the_server_is_released_by_its_user_only_with_force(
        team: Team, lock_run: tuple[str, subprocess.Popen[str]]) -> None:
    task, proc = lock_run
    lock = team.server.http(f"/api/locks/{task}", token("carol"))[1]["lock"]
    assert lock["owner"] == "alice" and lock["client"].split(":")[1] == str(proc.pid)
    for args in (("release", task), ("heartbeat", task)):
        done, out = team.json("alice", "lock", *args)  # alice, from another process
        assert done.returncode == 1, (args, done.stderr)
        assert out["error"]["code"] == "NOT_OWNER", out
    done, out = team.json("alice", "lock", "release", task)
    assert "running process" in out["error"]["message"] and "--force" in out["error"]["message"]
    assert team.server.http(f"/api/locks/{task}", token("carol"))[1]["locked"] is True

    done, out = team.json("alice", "lock", "release", task, "--force")
    assert done.returncode == 0 and out["released"] is True, done.stderr
    assert team.server.http(f"/api/locks/{task}", token("carol"))[1]["locked"] is False


def test_git_hook_checks_in_fallback_say_what_they_could_not_see(team: Team) -> None:
    task = unique()
    hook = [sys.executable, "-m", "orc_git.githooks.run", "pre-run", task]
    env = {**os.environ, **team.env("bob")}
    done = subprocess.run(hook, cwd=team.repo, env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0 and f"{task}: ready to run" in done.stderr
    assert "warning" not in done.stderr  # the team server answered: nothing unseen

    team.server.stop(signal.SIGKILL)
    done = subprocess.run(hook, cwd=team.repo, env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0 and f"{task}: ready to run" in done.stderr
    assert "orc: warning: the team server is unreachable" in done.stderr
    assert UNSEEN in done.stderr


def test_lock_run_and_run_in_fallback_say_they_hold_a_file_lease_only(team: Team) -> None:
    team.server.stop(signal.SIGKILL)
    for command in (("lock", "run"), ("run",)):
        task = unique()
        done = team.orc("bob", *command, task, "--", sys.executable, "-c", "print('ran')")
        assert done.returncode == 0 and done.stdout == "ran\n", (command, done.stderr)
        assert f"holding {task} by file lease only" in done.stderr, done.stderr
        assert UNSEEN in done.stderr


def test_the_conflict_prompt_in_fallback_says_what_it_cannot_see(team: Team) -> None:
    task = unique()
    team.server.stop(signal.SIGKILL)
    assert team.orc("alice", "lock", "acquire", task).returncode == 0  # a file lease
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "orc_git", "lock", "acquire", task],
                            cwd=team.repo, env={**os.environ, **team.env("bob")}, stdin=slave,
                            stdout=subprocess.PIPE, stderr=slave, start_new_session=True)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 20
        while b"Your choice" not in seen:
            left = deadline - time.monotonic()
            assert left > 0, seen
            if select.select([master], [], [], left)[0]:
                seen += os.read(master, 65536)
        os.write(master, b"3\n")
        assert proc.wait(20) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)
        if proc.stdout is not None:
            proc.stdout.close()
    text = seen.decode()
    assert UNSEEN in text and text.index(UNSEEN) < text.index("Your choice")


def test_the_post_checkout_report_says_its_stale_leases_are_this_clones(team: Team) -> None:
    task = unique()
    team.server.stop(signal.SIGKILL)
    # A fallback lease held for a parent process that has ended: stale (holder-dead).
    done = subprocess.run([sys.executable, "-c", "import subprocess, sys; "
                           "sys.exit(subprocess.call(sys.argv[1:]))", sys.executable, "-m",
                           "orc_git", "lock", "acquire", task], cwd=team.repo,
                          env={**os.environ, **team.env("alice")}, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    hook = [sys.executable, "-m", "orc_git.githooks.run", "post-checkout", "HEAD", "HEAD", "1"]
    done = subprocess.run(hook, cwd=team.repo, env={**os.environ, **team.env("bob")},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert "stale local leases of this clone, not the team server's" in done.stderr, done.stderr
    assert f"{task}: holder-dead" in done.stderr
