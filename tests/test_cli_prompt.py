"""The conflict prompt of ``orc lock acquire`` on a terminal (a real pty)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from conftest import (
    lock_path,
)
from lockcli import (
    ESC,
    FdReader,
    check_lock,
    hold_here,
    on_disk,
    piped_orc,
    release_here,
    tty_orc,
)

# -- the conflict prompt on a terminal -----------------------------------------------------

PROMPT = "Enter = wait]: "  # "Your choice [w/f/c or 1/2/3, Enter = wait]: "


def _check_prompt(text: str) -> None:
    assert "Task T is currently locked" in text
    assert "Locked by: Alice Martinez (alice@" in text
    assert f"pid {os.getpid()}" in text
    assert "Started:" in text and "Last activity:" in text
    assert "1. Wait" in text and "2. Force unlock" in text and "3. Cancel" in text
    assert "Your choice [w/f/c or 1/2/3, Enter = wait]: " in text


def test_tty_conflict_prompt_cancel_changes_nothing(repo: Path) -> None:
    hold_here(repo, "T")
    before = lock_path(repo, "T").read_bytes()
    with tty_orc("lock", "acquire", "T", cwd=repo, env={"NO_COLOR": "1"}) as (proc, tty):
        text = tty.until(PROMPT)
        _check_prompt(text)
        assert ESC not in text
        os.write(tty.fd, b"x\n")  # not an option: asked again
        tty.until(PROMPT, count=2)
        os.write(tty.fd, b"3\n")
        assert proc.wait(30) == 1  # cancelled is refused: exit 1 (DESIGN's table)
        assert proc.stdout is not None and proc.stdout.read() == b""
        rest = tty.rest()
    assert lock_path(repo, "T").read_bytes() == before
    assert "cancelled: T stays locked by Alice Martinez" in rest, rest
    assert "error" not in rest  # a choice, said plainly: not an error


def test_tty_conflict_prompt_end_of_input_cancels(repo: Path) -> None:
    hold_here(repo, "T")
    before = lock_path(repo, "T").read_bytes()
    with tty_orc("lock", "acquire", "T", cwd=repo) as (proc, tty):
        tty.until(PROMPT)
        os.write(tty.fd, b"\x04")  # Ctrl-D
        assert proc.wait(30) == 1
    assert lock_path(repo, "T").read_bytes() == before


def test_tty_conflict_prompt_force_steals(repo: Path) -> None:
    hold_here(repo, "T")
    with tty_orc("lock", "acquire", "T", cwd=repo) as (proc, tty):
        text = tty.until(PROMPT)
        _check_prompt(text)
        assert f"{ESC}[1;31m" in text  # colour on a terminal
        os.write(tty.fd, b"2\n")
        assert proc.wait(30) == 0
        assert proc.stdout is not None
        assert proc.stdout.read().decode().strip() == "2"
    disk = on_disk(repo, "T")
    assert disk.pid == proc.pid and disk.token == 2
    assert disk.stolen_from is not None and disk.stolen_from.startswith("alice@")


def test_tty_conflict_prompt_wait_acquires_after_release(repo: Path) -> None:
    hold_here(repo, "T")
    with tty_orc("lock", "acquire", "T", cwd=repo) as (proc, tty):
        tty.until(PROMPT)
        os.write(tty.fd, b"1\n")
        tty.until("waiting for T")
        assert proc.poll() is None
        release_here(repo, "T")
        assert proc.wait(30) == 0
    disk = on_disk(repo, "T")
    assert disk.pid == proc.pid and disk.token == 2 and disk.stolen_from is None


def test_tty_with_json_never_prompts(repo: Path) -> None:
    hold_here(repo, "T")
    with tty_orc("lock", "acquire", "T", "--json", cwd=repo) as (proc, tty):
        assert proc.wait(30) == 1
        assert "Your choice" not in tty.rest()
        assert proc.stdout is not None
        lines = proc.stdout.read().decode().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["error"]["code"] == "LOCK_HELD"
    assert check_lock(out["lock"])["pid"] == os.getpid()


def test_tty_conflict_prompt_escapes_a_hostile_holder(repo: Path) -> None:
    """The prompt's lines come from the lease: a display name with a newline, ESC and a bidi
    override is shown escaped on the terminal, never acted on (issue 8, point 10)."""
    from orc_git.locking import lockyaml
    from orc_git.locking.info import LockInfo, rfc3339

    now = rfc3339(time.time())
    fake = "x\n\x1b[31morc: fake line\u202e"
    lease = LockInfo(task_id="T", locked=True, owner="eve@elsewhere", user="eve",
                     host="elsewhere", pid=4242, pid_started=1700000000.0, acquired_at=now,
                     heartbeat_at=now, ttl=600, token=5, host_id="elsewhere/1700000000/1",
                     display_name="Eve" + fake)
    path = lock_path(repo, "T")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lockyaml.render(lease))
    with tty_orc("lock", "acquire", "T", cwd=repo, env={"NO_COLOR": "1"}) as (proc, tty):
        text = tty.until(PROMPT)
        assert "Locked by: Evex\\n\\x1b[31morc: fake line\\u202e (eve@elsewhere)" in text, text
        assert ESC not in text and "\u202e" not in text
        assert not any(line.startswith("orc: fake") for line in text.splitlines())
        os.write(tty.fd, b"3\n")
        assert proc.wait(30) == 1
    assert path.read_bytes() == lockyaml.render(lease)


# -- letters, digits, Enter (issue 11, point 4) ----------------------------------------------


def test_tty_prompt_letters_cancel_in_plain_words(repo: Path) -> None:
    """``c`` cancels like ``3``: exit 1, a plain line, no red."""
    hold_here(repo, "T")
    before = lock_path(repo, "T").read_bytes()
    with tty_orc("lock", "acquire", "T", cwd=repo) as (proc, tty):
        tty.until(PROMPT)
        os.write(tty.fd, b"c\n")
        assert proc.wait(30) == 1
        rest = tty.rest()
    assert lock_path(repo, "T").read_bytes() == before
    assert "cancelled: T stays locked by" in rest
    assert f"{ESC}[31m" not in rest and "orc: error" not in rest


def test_tty_prompt_f_forces_in_either_case(repo: Path) -> None:
    hold_here(repo, "T")
    with tty_orc("lock", "acquire", "T", cwd=repo) as (proc, tty):
        tty.until(PROMPT)
        os.write(tty.fd, b"F\n")
        assert proc.wait(30) == 0
    disk = on_disk(repo, "T")
    assert disk.pid == proc.pid and disk.token == 2 and disk.stolen_from is not None


def test_tty_prompt_w_and_enter_wait(repo: Path) -> None:
    """``w`` waits, and so does a bare Enter (the harmless default)."""
    for answer, token in ((b"w\n", 2), (b"\n", 4)):
        hold_here(repo, "T")
        with tty_orc("lock", "acquire", "T", cwd=repo) as (proc, tty):
            tty.until(PROMPT)
            os.write(tty.fd, answer)
            tty.until("waiting for T")
            assert proc.poll() is None
            release_here(repo, "T")
            assert proc.wait(30) == 0
        disk = on_disk(repo, "T")
        assert disk.pid == proc.pid and disk.token == token and disk.stolen_from is None
        lock_path(repo, "T").unlink()  # its holder (the orc above) has exited


# -- waiting without a terminal ----------------------------------------------------------------


def test_wait_without_a_tty_names_the_holder_once_and_on_change(repo: Path) -> None:
    """A script's ``--wait`` (stderr a pipe) logs one line naming the holder, and another only
    when the holder changes (here a forced ``lock run``: a new token), never a line per poll."""
    hold_here(repo, "T")
    with piped_orc("lock", "acquire", "T", "--wait", cwd=repo, other_parent=True) as proc:
        assert proc.stderr is not None
        err = FdReader(proc.stderr.fileno())
        err.until("orc: waiting for T: held by Alice Martinez")
        assert "(token 1)" in err.text
        with piped_orc("lock", "run", "T", "--force", "--", "cat", cwd=repo) as thief:
            assert thief.stdin is not None
            err.until("orc: waiting for T: held by", count=2)
            assert "(token 2)" in err.text
            thief.stdin.close()  # cat ends, lock run releases: the waiter gets it
            assert thief.wait(30) == 0
        assert proc.wait(30) == 0
        text = err.rest()
    assert text.count("waiting for T") == 2, text
    assert "\r" not in text and ESC not in text
    assert on_disk(repo, "T").token == 3


def test_lock_wait_without_a_tty_names_the_holder(repo: Path) -> None:
    hold_here(repo, "T")
    with piped_orc("lock", "wait", "T", cwd=repo, other_parent=True) as proc:
        assert proc.stderr is not None
        err = FdReader(proc.stderr.fileno())
        err.until("orc: waiting for T: held by Alice Martinez")
        release_here(repo, "T")
        assert proc.wait(30) == 0
        assert err.rest().count("waiting for T") == 1
