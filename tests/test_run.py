"""``orc run`` in p2p mode: output passes through byte for byte, the exit status is CMD's,
signals are forwarded, the lease is held while CMD runs, ``state.yaml`` is kept current, and a
held task is refused or waited for as by ``orc lock run``."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import tty
from pathlib import Path

import pytest
from conftest import leased, orc, orc_argv, orc_elsewhere, wait_for
from lockcli import FdReader, catches, hold_here, on_disk, piped_orc, release_here, tty_orc

from orc_git.state import read_state

PY = sys.executable


def run_bytes(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(orc_argv("run", *args), cwd=cwd, capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def py(code: str) -> list[str]:
    return [PY, "-c", code]


def state(repo: Path, task: str = "T") -> tuple[str, int | None]:
    st = read_state(repo / ".orc" / "tasks", task)
    assert st is not None
    return st.status, st.token


# -- passthrough ---------------------------------------------------------------------------

BINARY = bytes(range(256)) * 4096  # every byte value, 1 MiB, no newline at the end
WRITE_STDOUT = "import sys; sys.stdout.buffer.write(open(sys.argv[1], 'rb').read())"


def test_binary_output_passes_through_byte_for_byte(repo: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(BINARY)
    proc = run_bytes("T", "--", *py(WRITE_STDOUT), str(data), cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == BINARY


@pytest.mark.parametrize("data", [
    b"\xff\xfe not utf-8 \xc3(\n\xe2\x82 half a euro\nend without newline",
    b"\r\n\n\n\x00\x1b[31mred\x1b[0m\r",
    b"",
])
def test_invalid_utf8_and_no_trailing_newline_pass_through(repo: Path, tmp_path: Path,
                                                          data: bytes) -> None:
    path = tmp_path / "data"
    path.write_bytes(data)
    proc = run_bytes("T", "--", *py(WRITE_STDOUT), str(path), cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == data


def test_a_10_mb_single_line_passes_through(repo: Path) -> None:
    size = 10 * 1024 * 1024
    proc = run_bytes("T", "--", "sh", "-c", f"head -c {size} /dev/zero | tr '\\0' x", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout) == size and proc.stdout == b"x" * size


MAXRSS = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def test_a_huge_line_does_not_grow_memory(repo: Path) -> None:
    """The largest process below the wrapper is orc (head and tr are tiny): its peak memory
    with a 200 MB line is that of a run printing one short line, give or take 20 MB."""
    def peak(cmd: str) -> int:
        proc = subprocess.run([PY, "-c", MAXRSS, *orc_argv("run", "T", "--", "sh", "-c", cmd)],
                              cwd=repo, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return int(proc.stdout)

    small = peak("echo x")
    huge = peak(f"head -c {200 * 1024 * 1024} /dev/zero | tr '\\0' x")
    assert huge < small + 20 * 1024, (small, huge)  # KiB


INTERLEAVED = r"""
import sys
for i in range(3000):
    sys.stdout.buffer.write(b"out %d " % i + b"o" * (i % 97) + b"\n")
    sys.stdout.flush()
    sys.stderr.buffer.write(b"err %d " % i + b"\xff" * (i % 13) + b"\n")
    sys.stderr.flush()
"""


def test_interleaved_stdout_and_stderr_each_arrive_intact(repo: Path) -> None:
    proc = run_bytes("T", "--", *py(INTERLEAVED), cwd=repo)
    assert proc.returncode == 0
    assert proc.stdout == b"".join(b"out %d " % i + b"o" * (i % 97) + b"\n" for i in range(3000))
    narration = b"holding T"
    err = b"".join(line for line in proc.stderr.splitlines(keepends=True)
                   if not line.startswith(narration))
    assert err == b"".join(b"err %d " % i + b"\xff" * (i % 13) + b"\n" for i in range(3000))


def test_stdin_is_passed_to_the_command(repo: Path) -> None:
    proc = subprocess.run(orc_argv("run", "T", "--", "cat"), cwd=repo, input=b"fed\x00in",
                          capture_output=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == b"fed\x00in"


def test_a_reader_that_goes_away_stops_the_command_as_without_orc(repo: Path) -> None:
    """`orc run … | head -2`: CMD meets the closed pipe (SIGPIPE), as it would without orc."""
    proc = subprocess.Popen(orc_argv("run", "T", "--", "seq", "1", "1000000000"), cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"1\n"
    proc.stdout.close()
    try:
        assert proc.wait(60) == 128 + signal.SIGPIPE
    finally:
        if proc.poll() is None:
            proc.kill()
    assert b"Traceback" not in proc.stderr.read()
    proc.stderr.close()
    assert state(repo)[0] == "failed"


def test_a_background_grandchild_holding_the_output_does_not_keep_orc_waiting(
        repo: Path) -> None:
    proc = run_bytes("T", "--", "sh", "-c", "sleep 300 & echo $!; echo end", cwd=repo,
                     timeout=60)
    try:
        assert proc.returncode == 0
        assert proc.stdout.endswith(b"\nend\n")
        assert state(repo)[0] == "completed"
    finally:
        os.kill(int(proc.stdout.split()[0]), signal.SIGKILL)


ISATTY = "import os; print(os.isatty(0), os.isatty(1), os.isatty(2), flush=True)"


def test_the_command_sees_a_terminal_where_we_have_one(repo: Path) -> None:
    """stdout on a (raw) terminal: CMD's stdout is a terminal too, and its bytes arrive
    unchanged (no CR added); stderr a pipe: CMD's stderr is a pipe."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    proc = subprocess.Popen(orc_argv("run", "T", "--", *py(ISATTY + "\nimport sys;"
                                                            "sys.stdout.buffer.write(b'a\\nb')")),
                            cwd=repo, stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=subprocess.PIPE)
    os.close(slave)
    try:
        reader = FdReader(master)
        assert proc.wait(60) == 0
        assert reader.rest() == "False True False\na\nb"
    finally:
        os.close(master)
        assert proc.stderr is not None
        proc.stderr.close()


def test_run_on_a_terminal_keeps_stderr_a_terminal(repo: Path) -> None:
    with tty_orc("run", "T", "--", *py(ISATTY), cwd=repo) as (proc, term):
        assert proc.wait(60) == 0
        assert proc.stdout is not None
        assert proc.stdout.read() == b"True False True\n"  # stdin, stderr: the pty
        assert "holding T" in term.rest()


# -- exit statuses and signals -------------------------------------------------------------

@pytest.mark.parametrize("code", [0, 1, 7, 255])
def test_exit_status_is_the_commands(repo: Path, code: int) -> None:
    proc = run_bytes("T", "--", "sh", "-c", f"exit {code}", cwd=repo)
    assert proc.returncode == code
    assert state(repo)[0] == ("completed" if code == 0 else "failed")
    assert not leased(repo, "T")


def test_a_missing_command_exits_127_and_is_recorded_failed(repo: Path) -> None:
    proc = run_bytes("T", "--", "no-such-cmd-orc-test", cwd=repo)
    assert proc.returncode == 127
    assert b"command not found: no-such-cmd-orc-test" in proc.stderr
    assert b"Traceback" not in proc.stderr
    assert state(repo)[0] == "failed"
    assert not leased(repo, "T")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_command_killed_by_a_signal_exits_128_plus_the_signal(repo: Path,
                                                              sig: signal.Signals) -> None:
    proc = run_bytes("T", "--", "sh", "-c", f"echo before; kill -{sig.name[3:]} $$", cwd=repo)
    assert proc.returncode == 128 + sig
    assert proc.stdout == b"before\n"
    assert b"Traceback" not in proc.stderr
    assert state(repo)[0] == "failed"
    assert not leased(repo, "T")


# "ready" in one write: print() could be interrupted by the signal between "ready" and "\n".
SIGNAL_CHILD = r"""
import os, signal, sys
def handler(signum, frame):
    os.write(1, b"got " + signal.Signals(signum).name.encode() + b"\n")
    sys.exit(5)
signal.signal(signal.SIGTERM, handler)
signal.signal(signal.SIGINT, handler)
os.write(1, b"ready\n")
while True:
    signal.pause()
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_to_orc_run_are_forwarded_to_the_command(repo: Path,
                                                         sig: signal.Signals) -> None:
    with piped_orc("run", "T", "--", *py(SIGNAL_CHILD), cwd=repo) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        out = FdReader(proc.stdout.fileno())
        out.until("ready")
        wait_for(lambda: catches(proc.pid, signal.SIGTERM), timeout=10,
                 what="`orc run` to install its signal forwarding")
        assert leased(repo, "T")
        proc.send_signal(sig)
        assert proc.wait(30) == 5
        assert out.rest() == f"ready\ngot {sig.name}\n"
        assert "Traceback" not in proc.stderr.read().decode()
    assert state(repo)[0] == "failed"
    assert not leased(repo, "T")


# orc run as a terminal's session leader (its controlling terminal: the pty), as in a shell.
IN_A_TERMINAL = """
import os, sys
os.setsid()
fd = os.open(os.ttyname(0), os.O_RDWR)  # a session leader opening a tty acquires it
os.close(fd)
os.execvp(sys.argv[1], sys.argv[1:])
"""

COUNT_CHILD = r"""
import os, signal, sys
got = []
def on_int(signum, frame):
    got.append(signum)
    os.write(1, b"int %d\n" % len(got))
def on_term(signum, frame):
    os.write(1, b"term after %d\n" % len(got))
    sys.exit(3)
signal.signal(signal.SIGINT, on_int)
signal.signal(signal.SIGTERM, on_term)
os.write(1, b"set" + b"-up\n")  # the narration shows this code: keep the marker out of it
while True:
    signal.pause()
"""


def test_ctrl_c_at_the_terminal_reaches_the_command_once(repo: Path) -> None:
    """The terminal sends Ctrl-C's SIGINT to the foreground job, orc run and CMD alike: orc run
    must not forward a second one.  A SIGTERM afterwards is forwarded; CMD reports how many
    SIGINTs it had by then (a forwarded SIGINT would have been sent before the SIGTERM)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([PY, "-c", IN_A_TERMINAL, *orc_argv("run", "T", "--", *py(
        COUNT_CHILD))], cwd=repo, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    try:
        term = FdReader(master)
        term.until("set-up")
        wait_for(lambda: catches(proc.pid, signal.SIGTERM), timeout=10,
                 what="`orc run` to install its signal forwarding")
        os.write(master, b"\x03")  # Ctrl-C
        term.until("int 1")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 3
        assert "term after 1" in term.rest()
        assert "int 2" not in term.text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)


# -- the lease and state.yaml --------------------------------------------------------------

WHILE_RUNNING = f"""
set -e
cat .orc/tasks/T/state.yaml
"{PY}" -m orc_git lock status T --json
"{PY}" -m orc_git lock acquire T >/dev/null 2>&1 || echo "acquire refused: $?"
"""


def test_the_lease_is_held_and_state_running_while_the_command_runs(repo: Path) -> None:
    import json

    proc = orc("run", "T", "--", "sh", "-c", WHILE_RUNNING, cwd=repo)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "acquire refused: 1"
    lock = json.loads(lines[-2])["lock"]
    assert lock["locked"] and lock["mine"] and lock["token"] == 1
    assert 'status: "running"' in lines and "token: 1" in lines
    assert "holding T (token 1)" in proc.stderr
    assert state(repo) == ("completed", 1)
    assert not leased(repo, "T")
    assert hold_here(repo, "T")["token"] == 2


def test_state_records_each_runs_token_and_lock_domain(repo: Path) -> None:
    assert run_bytes("T", "--", "true", cwd=repo).returncode == 0
    assert run_bytes("T", "--", "false", cwd=repo).returncode == 1
    st = read_state(repo / ".orc" / "tasks", "T")
    assert st is not None and st.status == "failed" and st.token == 2
    domain = (repo / ".orc" / "local").glob("*")
    assert st.lock_domain and any(st.lock_domain in p.read_text(errors="replace")
                                  for p in domain if p.is_file())
    assert (repo / ".orc" / "tasks" / "T" / "task.yaml").is_file()  # the run created the task


def test_a_state_that_cannot_be_written_is_reported_and_the_command_still_runs(
        repo: Path) -> None:
    task_dir = repo / ".orc" / "tasks" / "T"
    task_dir.mkdir(parents=True)
    (task_dir / "state.yaml").write_text("not: [a, state\n")
    proc = run_bytes("T", "--", "echo", "ran", cwd=repo)
    assert proc.returncode == 0
    assert proc.stdout == b"ran\n"
    assert b"state.yaml not updated" in proc.stderr and b"Traceback" not in proc.stderr


def test_the_lost_lease_is_said_at_once(repo: Path) -> None:
    child = "import sys; print('ready', flush=True); sys.stdin.readline()"
    with piped_orc("run", "T", "--ttl", "3", "--", *py(child), cwd=repo) as proc:
        assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None
        FdReader(proc.stdout.fileno()).until("ready")
        assert orc_elsewhere("lock", "steal", "T", cwd=repo).returncode == 0
        err = FdReader(proc.stderr.fileno())
        err.until("LEASE LOST", timeout=15)
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        assert proc.wait(30) == 0
        assert "state.yaml not updated (completed): the lease was lost" in err.rest()
    assert on_disk(repo, "T").token == 2  # the thief keeps it
    assert state(repo) == ("running", 1)  # the end state is the new holder's to write


# -- conflicts -----------------------------------------------------------------------------

def test_a_held_task_is_refused_without_running(repo: Path, tmp_path: Path) -> None:
    hold_here(repo, "T")
    marker = tmp_path / "ran"
    proc = orc_elsewhere("run", "T", "--", "touch", str(marker), cwd=repo)
    assert proc.returncode == 1
    assert not marker.exists() and "locked by" in proc.stderr
    proc = orc_elsewhere("run", "T", "--timeout", "0.3", "--", "touch", str(marker), cwd=repo)
    assert proc.returncode == 124 and not marker.exists()
    assert on_disk(repo, "T").pid == os.getpid()


def test_wait_runs_once_the_holder_releases(repo: Path) -> None:
    hold_here(repo, "T")
    with tty_orc("run", "T", "--wait", "--", "echo", "ran", cwd=repo) as (proc, term):
        term.until("waiting for T")
        release_here(repo, "T")
        assert proc.wait(30) == 0
        assert proc.stdout is not None and proc.stdout.read() == b"ran\n"
    assert state(repo) == ("completed", 2)


@pytest.mark.parametrize("args", [("T",), ("T", "--"), ("T", "--project", "", "--", "true"),
                                  ("a/b", "--", "true")])
def test_bad_invocations_are_usage_errors(repo: Path, args: tuple[str, ...]) -> None:
    proc = orc("run", *args, cwd=repo)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr


def test_solo_mode_runs_without_writing_anything(solo_repo: Path) -> None:
    from conftest import tree_snapshot

    before = tree_snapshot(solo_repo)
    proc = run_bytes("T", "--", "sh", "-c", "echo out; exit 4", cwd=solo_repo)
    assert proc.returncode == 4 and proc.stdout == b"out\n"
    assert tree_snapshot(solo_repo) == before
