"""Handing a task over through git, in team mode: an ``unlock`` carries the releaser's head, the
server keeps it as the task's ``last_head`` (across restarts) and says it in ``lock.released``
and later ``lock_result``s; the next holder's orc compares it with its own HEAD.  Two clones of
one bare remote, a real server on loopback, the real CLI."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from orc_git.handover import Handover
from orc_git.repo import find_repo

from orc_team.client.locker import WebSocketLocker
from orc_team.protocol import INVALID_MESSAGE

from conftest import (
    Client,
    LockerFactory,
    ServerFactory,
    ServerProc,
    run_orc,
    settings_for,
    token,
    unique,
)

SHA = "0123456789abcdef0123456789abcdef01234567"


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          timeout=60).stdout.strip()


@dataclass
class Person:
    name: str
    clone: Path
    env: dict[str, str]

    def orc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_orc(*args, cwd=self.clone, env=self.env)

    def orc_json(self, *args: str) -> tuple[int, dict[str, Any], str]:
        done = self.orc(*args, "--json")
        lines = done.stdout.splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, (done.stdout, done.stderr)
        return done.returncode, json.loads(lines[0]), done.stderr

    def git(self, *args: str) -> str:
        return git(*args, cwd=self.clone)


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    bare = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    seed = tmp_path / "seed"
    git("clone", "-q", str(bare), str(seed), cwd=tmp_path)
    (seed / ".gitignore").write_text(".orc/tasks/\n.orc/local/\n")
    git("add", "-A", cwd=seed)
    git("-c", "user.name=seed", "-c", "user.email=seed@example.com", "commit", "-q", "-m",
        "base", cwd=seed)
    git("push", "-q", "origin", "main", cwd=seed)
    return bare


def person(tmp_path: Path, name: str, remote: Path, server: ServerProc) -> Person:
    clone = tmp_path / name
    git("clone", "-q", str(remote), str(clone), cwd=tmp_path)
    for key, value in (("user.name", name), ("user.email", f"{name}@example.com")):
        git("config", key, value, cwd=clone)
    env = {"ORC_HOME": str(tmp_path / f"{name}-home"), "ORC_MODE": "team",
           "ORC_TEAM_URL": f"ws://{server.base}", "ORC_TEAM_TOKEN": token(name)}
    return Person(name, clone, env)


def work_and_push(alice: Person, task: str, message: str) -> str:
    """Alice runs the task: commits and pushes while holding it, then releases."""
    done = alice.orc("lock", "run", task, "--", "sh", "-c",
                     f"git commit -q --allow-empty -m '{message}' && git push -q origin main")
    assert done.returncode == 0, done.stderr
    return alice.git("rev-parse", "HEAD")


def test_bob_is_told_what_alice_pushed_until_he_merges_it(
        tmp_path: Path, remote: Path, start_server: ServerFactory) -> None:
    server = start_server()
    alice, bob = (person(tmp_path, n, remote, server) for n in ("alice", "bob"))
    task = unique()
    sha = work_and_push(alice, task, "alice work")

    done = bob.orc("lock", "acquire", task)
    assert done.returncode == 0, done.stderr
    assert "its last holder, alice, released it" in done.stderr and sha[:12] in done.stderr
    assert "fetch and merge origin/main" in done.stderr
    assert bob.orc("lock", "release", task).returncode == 0

    code, out, _ = bob.orc_json("lock", "acquire", task)
    assert code == 0 and out["behind"] == {"commit": sha, "branch": "origin/main",
                                           "by": "alice"}
    assert bob.orc("lock", "release", task).returncode == 0  # behind: the server keeps Alice's

    code, out, _ = bob.orc_json("lock", "acquire", task, "--require-latest")
    assert code == 1 and out["error"]["code"] == "BEHIND" and out["behind"]["commit"] == sha
    code, status, _ = bob.orc_json("lock", "status", task)
    assert status["lock"]["locked"] is False  # the refused grant was given back

    server.stop()
    server.start()  # the same store: the last head survives the restart

    code, out, _ = bob.orc_json("lock", "acquire", task, "--require-latest")
    assert code == 1 and out["behind"]["commit"] == sha
    bob.git("fetch", "-q")
    bob.git("merge", "-q", "--ff-only", "origin/main")
    code, out, err = bob.orc_json("lock", "acquire", task, "--require-latest")
    assert code == 0 and out["behind"] is None and "last holder" not in err
    assert bob.orc("lock", "release", task).returncode == 0


def test_orc_run_warns_and_a_force_pushed_away_commit_counts_as_behind(
        tmp_path: Path, remote: Path, server: ServerProc) -> None:
    alice, bob = (person(tmp_path, n, remote, server) for n in ("alice", "bob"))
    task = unique()
    sha = work_and_push(alice, task, "soon gone")
    alice.git("reset", "-q", "--hard", "HEAD~1")
    alice.git("push", "-q", "--force", "origin", "main")
    bob.git("fetch", "-q")
    done = bob.orc("run", task, "--", "true")
    assert done.returncode == 0, done.stderr
    assert sha[:12] in done.stderr and "does not contain" in done.stderr


async def test_unlock_head_becomes_last_head_in_events_and_lock_results(
        server: ServerProc, connect_as: Any) -> None:
    alice: Client = await connect_as("alice")
    bob: Client = await connect_as("bob")
    task = unique()
    assert (await alice.lock(task))["last_head"] is None
    assert (await bob.request("subscribe", {"task_id": task}))["type"] == "subscribed"
    reply = await alice.request("unlock", {"task_id": task,
                                           "head": {"commit": SHA, "branch": "origin/main"}})
    assert reply["type"] == "unlock_result" and reply["data"]["released"] is True
    released = await bob.event("lock.released", task)
    head = released["payload"]["last_head"]
    assert head["commit"] == SHA and head["branch"] == "origin/main" and head["by"] == "alice"
    assert isinstance(head["at"], str)
    result = await bob.lock(task)
    assert result["acquired"] is True and result["last_head"] == head
    assert (await bob.lock(task))["last_head"] == head  # a renewal says it too
    # An unlock without a head keeps the one there was.
    assert (await bob.request("unlock", {"task_id": task}))["data"]["released"] is True
    assert (await bob.event("lock.released", task))["payload"]["last_head"] == head
    assert (await alice.lock(task))["last_head"] == head


@pytest.mark.parametrize("head", [{"commit": "abc"}, {"commit": SHA, "branch": "-oops"},
                                  {"commit": "--upload-pack=x"}, "main", [SHA]])
async def test_a_bad_unlock_head_is_refused_and_releases_nothing(
        server: ServerProc, connect_as: Any, head: object) -> None:
    alice: Client = await connect_as("alice")
    task = unique()
    await alice.lock(task)
    reply = await alice.request("unlock", {"task_id": task, "head": head})
    assert reply["type"] == "error" and reply["data"]["code"] == INVALID_MESSAGE
    assert "data.head" in reply["data"]["message"]
    assert (await alice.lock(task))["extended"] is True  # still held


def test_the_client_sends_its_head_and_shows_last_head_on_lock_info(
        tmp_path: Path, remote: Path, server: ServerProc, make_locker: LockerFactory) -> None:
    alice = person(tmp_path, "alice", remote, server)
    sha = alice.git("rev-parse", "HEAD")
    task = unique()
    locker = WebSocketLocker(settings_for(server, "alice"), unique("alice-inst"),
                             handover=Handover(find_repo(alice.clone)))
    try:
        assert locker.acquire(task).last_head is None
        assert locker.release(task) is True
    finally:
        locker.close()
    info = make_locker(server, "bob").acquire(task)
    assert info.last_head is not None
    assert (info.last_head.commit, info.last_head.branch, info.last_head.by) == (
        sha, "origin/main", "alice")


def test_at_a_terminal_bob_accepts_the_offer_and_gets_alices_commit(
        tmp_path: Path, remote: Path, server: ServerProc) -> None:
    alice, bob = (person(tmp_path, n, remote, server) for n in ("alice", "bob"))
    task = unique()
    sha = work_and_push(alice, task, "alice work")
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "orc_git", "lock", "run", task, "--",
                             "git", "rev-parse", "HEAD"], cwd=bob.clone, stdin=slave,
                            stdout=subprocess.PIPE, stderr=slave,
                            env={**os.environ, **bob.env}, start_new_session=True)
    os.close(slave)
    try:
        seen = read_until(master, b"[Y/n]")
        assert b"does not contain" in seen
        os.write(master, b"y\n")
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert out.strip() == sha  # the command ran on Alice's commit, fetched and merged first
    assert bob.git("rev-parse", "HEAD") == sha


def read_until(fd: int, needle: bytes, timeout: float = 30) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        left = deadline - time.monotonic()
        assert left > 0, f"no {needle!r} within {timeout} s: {data!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"output ended before {needle!r}: {data!r}"
            data += chunk
    return data
