"""``orc lock run``: holding a lease while a command runs, signals, exit statuses."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    leased,
    lock_path,
    orc,
    orc_elsewhere,
    orc_json,
    wait_for,
)
from lockcli import (
    FdReader,
    catches,
    check_lock,
    hold_here,
    on_disk,
    piped_orc,
)

# -- lock run ------------------------------------------------------------------------------

def test_run_exits_with_the_command_status_and_releases(repo: Path) -> None:
    proc = orc("lock", "run", "T", "--", "sh", "-c", "exit 7", cwd=repo)
    assert proc.returncode == 7, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not leased(repo, "T")
    _, out = orc_json("lock", "status", "T", cwd=repo)
    assert out["lock"]["locked"] is False
    assert hold_here(repo, "T")["token"] == 2  # `run` held token 1


def test_run_holds_the_lease_while_the_command_runs(repo: Path) -> None:
    script = f'echo "$PPID"; exec "{sys.executable}" -m orc_git lock status T --json'
    proc = orc("lock", "run", "T", "--", "sh", "-c", script, cwd=repo)
    assert proc.returncode == 0, proc.stderr
    ppid, status = proc.stdout.splitlines()
    lock = check_lock(json.loads(status)["lock"])
    assert lock["locked"] is True and lock["stale"] is False and lock["mine"] is True
    assert lock["pid"] == int(ppid)  # `orc lock run` itself holds it, not its caller
    assert not leased(repo, "T")


def test_run_refuses_a_held_task_without_running_the_command(repo: Path,
                                                             tmp_path: Path) -> None:
    hold_here(repo, "T")
    marker = tmp_path / "ran"
    proc = orc_elsewhere("lock", "run", "T", "--", "touch", str(marker), cwd=repo)
    assert proc.returncode == 1
    assert not marker.exists()
    assert on_disk(repo, "T").pid == os.getpid()


SIGNAL_CHILD = r"""
import signal, sys
def handler(signum, frame):
    with open(sys.argv[1], "w") as fh:
        fh.write(signal.Signals(signum).name)
    sys.exit(5)
signal.signal(signal.SIGTERM, handler)
signal.signal(signal.SIGINT, handler)
print("ready", flush=True)
while True:
    signal.pause()
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_forwards_signals_and_exits_with_the_child_status(
        repo: Path, tmp_path: Path, sig: signal.Signals) -> None:
    flag = tmp_path / "signalled"
    with piped_orc("lock", "run", "T", "--", sys.executable, "-c", SIGNAL_CHILD, str(flag),
                   cwd=repo) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        FdReader(proc.stdout.fileno()).until("ready")
        wait_for(lambda: catches(proc.pid, signal.SIGTERM), timeout=10,
                 what="`orc lock run` to install its signal forwarding")
        assert leased(repo, "T")
        proc.send_signal(sig)
        assert proc.wait(30) == 5
        assert "Traceback" not in proc.stderr.read().decode()
    assert flag.read_text() == sig.name
    assert not leased(repo, "T")


def test_run_child_killed_by_a_forwarded_signal_exits_128_plus_signal(repo: Path) -> None:
    child = "import signal; print('ready', flush=True); signal.pause()"
    with piped_orc("lock", "run", "T", "--", sys.executable, "-c", child, cwd=repo) as proc:
        assert proc.stdout is not None
        FdReader(proc.stdout.fileno()).until("ready")
        wait_for(lambda: catches(proc.pid, signal.SIGTERM), timeout=10,
                 what="`orc lock run` to install its signal forwarding")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 128 + signal.SIGTERM
    assert not leased(repo, "T")


def test_run_says_at_once_when_the_lease_is_lost(repo: Path) -> None:
    child = "import sys; print('ready', flush=True); sys.stdin.readline()"
    with piped_orc("lock", "run", "T", "--ttl", "3", "--", sys.executable, "-c", child,
                   cwd=repo) as proc:
        assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None
        FdReader(proc.stdout.fileno()).until("ready")
        stolen = orc_elsewhere("lock", "steal", "T", cwd=repo)
        assert stolen.returncode == 0, stolen.stderr
        # ttl 3: a heartbeat at least every second finds the lease gone
        FdReader(proc.stderr.fileno()).until("LEASE LOST", timeout=15)
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        assert proc.wait(30) == 0
    disk = on_disk(repo, "T")  # the thief's lease survives the run's end
    assert disk.token == 2 and disk.stolen_from is not None


def test_run_heartbeats_at_least_every_third_of_the_ttl(repo: Path) -> None:
    child = "import sys; print('ready', flush=True); sys.stdin.readline()"
    with piped_orc("lock", "run", "T", "--ttl", "3", "--", sys.executable, "-c", child,
                   cwd=repo) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        FdReader(proc.stdout.fileno()).until("ready")
        path = lock_path(repo, "T")
        seen = [os.stat(path).st_ino]
        stamps = []
        for _ in range(2):  # every heartbeat rewrites the lease (a new inode)
            wait_for(lambda: os.stat(path).st_ino != seen[-1], timeout=10, what="a heartbeat")
            seen.append(os.stat(path).st_ino)
            stamps.append(time.monotonic())
        assert stamps[1] - stamps[0] < 2.5  # ttl 3 => every second, never the default 10 s
        assert on_disk(repo, "T").ttl == 3
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        assert proc.wait(30) == 0
    assert not leased(repo, "T")


def test_run_timeout_on_a_held_task_exits_124_without_running(repo: Path,
                                                             tmp_path: Path) -> None:
    hold_here(repo, "T")
    marker = tmp_path / "ran"
    proc = orc_elsewhere("lock", "run", "T", "--timeout", "0.3", "--", "touch", str(marker),
                         cwd=repo)
    assert proc.returncode == 124
    assert not marker.exists()
    assert "Traceback" not in proc.stderr


def test_run_of_a_missing_command_exits_127_without_traceback(repo: Path) -> None:
    proc = orc("lock", "run", "T", "--", "no-such-cmd-orc-test", cwd=repo)
    assert proc.returncode == 127
    assert "Traceback" not in proc.stderr
    assert "no-such-cmd-orc-test" in proc.stderr
    assert not leased(repo, "T")


@pytest.mark.parametrize("tail", [(), ("--",)])
def test_run_without_a_command_is_a_usage_error(repo: Path, tail: tuple[str, ...]) -> None:
    proc = orc("lock", "run", "T", *tail, cwd=repo)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr
    assert not leased(repo, "T")




# -- --json and --force (issue 11, point 4) ---------------------------------------------------


def test_run_json_prints_the_acquire_object_first_then_the_commands_output(repo: Path) -> None:
    """stdout's first line is what ``acquire --json`` prints; the rest is CMD's, unchanged."""
    proc = orc("lock", "run", "T", "--json", "--", "sh", "-c", "echo '{not json'; exit 3",
               cwd=repo)
    assert proc.returncode == 3, proc.stderr
    first, *rest = proc.stdout.splitlines()
    out = json.loads(first)
    assert out["schema"] == 1 and out["mode"] == "p2p" and out["acquired"] is True
    lock = check_lock(out["lock"])
    assert lock["token"] == 1 and lock["mine"] is True
    assert rest == ["{not json"]
    assert "holding" not in proc.stderr  # --json: no narration
    assert not leased(repo, "T")


def test_run_json_refused_is_one_object_and_the_command_never_runs(repo: Path,
                                                                   tmp_path: Path) -> None:
    hold_here(repo, "T")
    marker = tmp_path / "ran"
    proc = orc("lock", "run", "T", "--json", "--", "touch", str(marker), cwd=repo)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    out = json.loads(lines[0])
    assert out["error"]["code"] == "LOCK_HELD" and out["acquired"] is False
    assert check_lock(out["lock"])["pid"] == os.getpid()
    assert not marker.exists()


def test_run_json_command_not_found_is_said_on_stderr(repo: Path) -> None:
    """Once the acquire object is out, stdout is CMD's: a CMD that cannot start is told on
    stderr (exit 127), never as a second JSON object."""
    proc = orc("lock", "run", "T", "--json", "--", "no-such-command-xyz", cwd=repo)
    assert proc.returncode == 127
    assert len(proc.stdout.splitlines()) == 1
    assert json.loads(proc.stdout)["acquired"] is True
    assert "command not found: no-such-command-xyz" in proc.stderr
    assert not leased(repo, "T")


def test_run_force_takes_the_lease_from_a_live_holder(repo: Path) -> None:
    hold_here(repo, "T")
    proc = orc("lock", "run", "T", "--force", "--", "sh", "-c", "exit 0", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert "holding T (token 2) while `sh -c 'exit 0'` runs" in proc.stderr  # shlex.join
    assert not leased(repo, "T")
    assert hold_here(repo, "T")["token"] == 3  # the steal was token 2
