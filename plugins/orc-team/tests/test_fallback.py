"""Team mode's fallback to the file lease: at acquire, mid-lease (the server killed under a
running ``orc lock run``), the lease taken back when the server returns, and split brains
surfaced.  Real server processes on loopback; servers are killed with SIGKILL."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from orc_git.errors import LeaseLost, LockHeld
from orc_git.lease import Lease, acquire_waiting
from orc_git.locking import lockio

from orc_team.client.team import TeamLocker

from conftest import (
    Lines,
    LockerFactory,
    ServerFactory,
    ServerProc,
    TeamContext,
    dead_url,
    git_repo,
    run_orc,
    token,
    unique,
)


def on_disk(tasks: Path | str, task: str) -> bool:
    """Is a file lease held?  (A released one may leave a tombstone file: no lease.)"""
    return lockio.read(f"{tasks}/{task}", task) is not None


def file_leased(locker: TeamLocker, task: str) -> bool:
    return on_disk(locker.file.root, task)


def team(ctx: object) -> TeamLocker:
    locker = ctx.locker()  # type: ignore[attr-defined]
    assert isinstance(locker, TeamLocker)
    return locker


def test_acquire_against_a_dead_server_falls_back_at_once(
        team_context: TeamContext, caplog: pytest.LogCaptureFixture) -> None:
    locker = team(team_context(dead_url(), "alice"))
    task = unique()
    started = time.monotonic()
    info = locker.acquire(task, ttl=30)
    elapsed = time.monotonic() - started
    assert elapsed < 5.0, elapsed  # loosely: the bench has the real figure (well under 1 s)
    assert info.token == 1 and file_leased(locker, task) and locker.on_fallback(task)
    assert "using the file lease" in caplog.text
    assert locker.heartbeat(task).token == 1  # still away: the file lease is renewed
    assert locker.release(task) is True
    assert not file_leased(locker, task)


def test_a_refusal_is_not_a_fallback(server: ServerProc, team_context: TeamContext,
                                     make_locker: LockerFactory) -> None:
    task = unique()
    make_locker(server, "bob").acquire(task)
    locker = team(team_context(server, "alice"))
    with pytest.raises(LockHeld) as caught:
        locker.acquire(task)
    assert caught.value.lock is not None and caught.value.lock.user == "bob"
    assert not file_leased(locker, task)


def test_the_cli_falls_back_against_a_dead_server(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    env = {"ORC_HOME": str(tmp_path / "home"), "ORC_MODE": "team", "ORC_TEAM_URL": dead_url(),
           "ORC_TEAM_TOKEN": token("alice")}
    task = unique()
    done = run_orc("lock", "acquire", task, "--json", cwd=repo, env=env)
    assert done.returncode == 0, done.stderr
    assert "using the file lease" in done.stderr and "Traceback" not in done.stderr
    assert on_disk(repo / ".orc" / "tasks", task)
    done = run_orc("lock", "release", task, "--json", cwd=repo, env=env)
    assert done.returncode == 0 and '"released": true' in done.stdout, done.stderr
    assert not on_disk(repo / ".orc" / "tasks", task)


def test_lock_run_goes_on_when_the_server_is_killed(start_server: ServerFactory,
                                                    tmp_path: Path) -> None:
    server = start_server()
    repo = git_repo(tmp_path / "repo")
    task = unique()
    go = tmp_path / "go"
    os.mkfifo(go)
    env = {**os.environ, "ORC_HOME": str(tmp_path / "home"), "ORC_MODE": "team",
           "ORC_TEAM_URL": f"ws://{server.base}", "ORC_TEAM_TOKEN": token("alice")}
    # --ttl 3: a heartbeat every second.  The command waits until the test writes to the FIFO.
    run = subprocess.Popen([sys.executable, "-m", "orc_git", "lock", "run", task, "--ttl", "3",
                            "--", sys.executable, "-c", "import sys; open(sys.argv[1]).read()",
                            str(go)], cwd=repo, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        err = Lines(run.stderr)
        err.wait_for(f"holding {task} (token 1)")
        assert server.http(f"/api/locks/{task}", token("carol"))[1]["locked"] is True
        server.stop(signal.SIGKILL)
        err.wait_for("holding the file lease (token 1) until it is back")
        assert on_disk(repo / ".orc" / "tasks", task)
        assert run.poll() is None  # the run goes on
        with open(go, "w") as fifo:
            fifo.write("go\n")
        assert run.wait(timeout=15) == 0, err.text
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert "LEASE LOST" not in err.text
    assert not on_disk(repo / ".orc" / "tasks", task)


def test_the_server_back_takes_the_lease_back(start_server: ServerFactory,
                                              team_context: TeamContext,
                                              make_locker: LockerFactory) -> None:
    server = start_server()
    locker = team(team_context(server, "alice"))
    task = unique()
    held = locker.acquire(task, ttl=60)
    assert not locker.on_fallback(task)
    server.stop(signal.SIGKILL)
    locker.heartbeat(task)  # the server is gone: onto the file lease, the lease goes on
    assert locker.on_fallback(task) and file_leased(locker, task)
    server.start()
    back = locker.heartbeat(task)  # re-asserted: the server still had it, an extension
    assert not locker.on_fallback(task) and back.token == held.token
    assert not file_leased(locker, task)
    with pytest.raises(LockHeld):
        make_locker(server, "bob").acquire(task)
    assert locker.release(task) is True
    server.stop()


def test_an_acquire_that_fell_back_is_asserted_when_the_server_returns(
        start_server: ServerFactory, team_context: TeamContext) -> None:
    server = start_server()
    server.stop(signal.SIGKILL)
    locker = team(team_context(server, "alice"))
    task = unique()
    locker.acquire(task, ttl=60)
    assert locker.on_fallback(task)
    server.start()
    back = locker.heartbeat(task)
    assert back.token == 1 and back.user == "alice" and not file_leased(locker, task)
    assert server.http(f"/api/locks/{task}", token("carol"))[1]["lock"]["token"] == 1
    server.stop()


def test_split_brain_is_surfaced(start_server: ServerFactory, team_context: TeamContext,
                                 make_locker: LockerFactory,
                                 caplog: pytest.LogCaptureFixture) -> None:
    server = start_server()
    server.stop(signal.SIGKILL)
    locker = team(team_context(server, "alice"))
    task = unique()
    info = locker.acquire(task, ttl=60)  # file lease: the server is down
    lease = Lease(locker, info, interval=1.0)
    server.start()
    make_locker(server, "bob").acquire(task)  # bob reaches the server and gets the task
    lease.beat()  # what the heartbeat thread does
    assert lease.lost
    with pytest.raises(LeaseLost, match=r"split brain.*bob"):
        lease.check()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("split brain" in r.getMessage() for r in errors)
    assert not file_leased(locker, task)
    server.stop()


def test_split_brain_in_the_past_is_surfaced(start_server: ServerFactory,
                                             team_context: TeamContext,
                                             make_locker: LockerFactory) -> None:
    server = start_server()
    locker = team(team_context(server, "alice"))
    task = unique()
    assert locker.acquire(task, ttl=2).token == 1
    server.stop(signal.SIGKILL)
    locker.heartbeat(task)  # onto the file lease
    server.start()
    bob = make_locker(server, "bob")
    # bob waits until alice's server lease expires, holds the task, and is done with it
    assert acquire_waiting(bob, task, ttl=30, wait=True, timeout=15).token == 2
    bob.release(task)
    with pytest.raises(LeaseLost, match=r"split brain.*token 1 -> 3"):
        locker.heartbeat(task)
    assert not file_leased(locker, task)
    assert server.http(f"/api/locks/{task}", token("carol"))[1]["locked"] is False
    server.stop()


def test_cli_heartbeat_moves_a_fallback_lease_back(start_server: ServerFactory,
                                                   tmp_path: Path) -> None:
    server = start_server()
    server.stop(signal.SIGKILL)
    repo = git_repo(tmp_path / "repo")
    env = {"ORC_HOME": str(tmp_path / "home"), "ORC_MODE": "team",
           "ORC_TEAM_URL": f"ws://{server.base}", "ORC_TEAM_TOKEN": token("alice")}
    task = unique()
    assert run_orc("lock", "acquire", task, cwd=repo, env=env).returncode == 0
    assert on_disk(repo / ".orc" / "tasks", task)
    server.start()
    done = run_orc("lock", "heartbeat", task, "--json", cwd=repo, env=env)
    assert done.returncode == 0, done.stderr
    assert "back on the team server" in done.stderr
    assert not on_disk(repo / ".orc" / "tasks", task)
    lock = server.http(f"/api/locks/{task}", token("carol"))[1]["lock"]
    assert lock["owner"] == "alice" and lock["client"].split(":")[1] == str(os.getpid())
    done = run_orc("lock", "release", task, "--json", cwd=repo, env=env)
    assert done.returncode == 0 and '"released": true' in done.stdout
    server.stop()


def test_falling_back_onto_a_file_lease_held_here_is_a_split_brain(
        start_server: ServerFactory, team_context: TeamContext) -> None:
    server = start_server()
    ctx = team_context(server, "alice")
    locker = team(ctx)
    task = unique()
    locker.acquire(task, ttl=60)
    server.stop(signal.SIGKILL)
    # Another holder of this clone (here: on behalf of our parent process) fell back meanwhile.
    other = ctx.file_locker(os.getppid())
    other.acquire(task)
    with pytest.raises(LeaseLost, match=r"split brain.*holds the file lease here"):
        locker.heartbeat(task)
    assert other.is_locked(task).pid == os.getppid()  # theirs is left alone
    other.release(task)
