"""The conflict prompt in team mode (issue 11, point 4): the server lets only admins force, so a
member is not offered force; an admin is, and it steals on the server.  A real pty and server."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import WAIT, LockerFactory, ServerProc, git_repo, token, unique

PROMPT = "Enter = wait]: "


class Tty:
    """The master end of a pty, read until a text shows up (never blocking past a deadline)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.text = ""

    def until(self, needle: str, count: int = 1, timeout: float = 3 * WAIT) -> str:
        deadline = time.monotonic() + timeout
        while self.text.count(needle) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"no {needle!r} within {timeout} s: {self.text!r}"
            if select.select([self.fd], [], [], left)[0]:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # EIO: the child closed its end
                    chunk = b""
                assert chunk, f"output ended before {needle!r}: {self.text!r}"
                self.text += chunk.decode("utf-8", "replace")
        return self.text


@contextmanager
def tty_acquire(task: str, repo: Path, env: dict[str, str]) -> Iterator[tuple[
        subprocess.Popen[bytes], Tty]]:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "orc_git", "lock", "acquire", task],
                            cwd=repo, stdin=slave, stdout=subprocess.PIPE, stderr=slave,
                            env={**os.environ, **env, "NO_COLOR": "1"}, start_new_session=True)
    os.close(slave)
    try:
        yield proc, Tty(master)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
        os.close(master)


def _env(server: ServerProc, tmp_path: Path, user: str, role: str) -> dict[str, str]:
    return {"ORC_HOME": str(tmp_path / "home"), "ORC_MODE": "team",
            "ORC_TEAM_URL": f"ws://{server.base}", "ORC_TEAM_TOKEN": token(user, role)}


def test_a_member_is_not_offered_force(server: ServerProc, make_locker: LockerFactory,
                                       tmp_path: Path) -> None:
    task = unique()
    make_locker(server, "alice").acquire(task)
    repo = git_repo(tmp_path / "repo")
    with tty_acquire(task, repo, _env(server, tmp_path, "bob", "member")) as (proc, tty):
        text = tty.until(PROMPT)
        assert f"Task {task} is currently locked" in text and "alice" in text
        assert "2. Force unlock: needs the admin role on the team server (not offered)" in text
        assert "Your choice [w/c or 1/3, Enter = wait]: " in text
        os.write(tty.fd, b"f\n")  # not offered: said, and asked again
        tty.until(PROMPT, count=2)
        assert "force needs the admin role on the team server" in tty.text
        os.write(tty.fd, b"2\n")
        tty.until(PROMPT, count=3)
        os.write(tty.fd, b"c\n")
        assert proc.wait(3 * WAIT) == 1
        tty.until("cancelled:")
    assert "error" not in tty.text
    status, body = server.http(f"/api/locks/{task}", token("carol"))
    assert status == 200 and body["lock"]["owner"] == "alice"


def test_an_admin_is_offered_force_and_it_steals(server: ServerProc,
                                                 make_locker: LockerFactory,
                                                 tmp_path: Path) -> None:
    task = unique()
    make_locker(server, "alice").acquire(task)
    repo = git_repo(tmp_path / "repo")
    with tty_acquire(task, repo, _env(server, tmp_path, "bob", "admin")) as (proc, tty):
        text = tty.until(PROMPT)
        assert "2. Force unlock (may corrupt task state)" in text
        assert "Your choice [w/f/c or 1/2/3, Enter = wait]: " in text
        os.write(tty.fd, b"f\n")
        assert proc.wait(3 * WAIT) == 0, tty.text
    status, body = server.http(f"/api/locks/{task}", token("carol"))
    assert status == 200 and body["lock"]["owner"] == "bob"
