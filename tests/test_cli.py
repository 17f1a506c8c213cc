"""``orc`` as a whole: usage errors, interrupts, outside a repository, colour and solo mode."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from conftest import (
    lock_path,
    orc,
    orc_elsewhere,
    orc_json,
)
from lockcli import (
    ESC,
    check_lock,
    hold_here,
    one_json,
    tty_orc,
)

# -- usage errors, interrupts, output hygiene ----------------------------------------------

USAGE_CASES = [
    (("lock",), "USAGE"),
    (("lock", "frob"), "USAGE"),
    (("lock", "acquire"), "USAGE"),
    (("lock", "release"), "USAGE"),
    (("lock", "status"), "USAGE"),
    (("lock", "acquire", "T", "--ttl", "abc"), "USAGE"),
    (("lock", "acquire", "T", "--ttl", "0"), "USAGE"),
    (("lock", "acquire", "T", "--ttl", "-5"), "USAGE"),
    (("lock", "acquire", "T", "--timeout", "-1"), "USAGE"),
    (("lock", "wait", "T", "--timeout", "soon"), "USAGE"),
    (("lock", "acquire", "../escape"), "INVALID_INPUT"),
    (("lock", "status", "a/b"), "INVALID_INPUT"),
    (("lock", "release", ".hidden"), "INVALID_INPUT"),
]


@pytest.mark.parametrize(("args", "code"), USAGE_CASES)
def test_usage_errors_exit_2_with_one_json_object(repo: Path, args: tuple[str, ...],
                                                  code: str) -> None:
    proc = orc(*args, "--json", cwd=repo)
    assert proc.returncode == 2
    out = one_json(proc)
    assert out["error"]["code"] == code
    assert list((repo / ".orc" / "tasks").iterdir()) == []  # nothing touched

    proc = orc(*args, cwd=repo)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr and "Traceback" not in proc.stderr


def test_outside_a_repository_is_a_usage_error(tmp_path: Path) -> None:
    elsewhere = tmp_path / "not-a-repo"
    elsewhere.mkdir()
    code, out = orc_json("lock", "status", "T", cwd=elsewhere)
    assert code == 2
    assert out["error"]["code"] == "NOT_A_REPOSITORY"


def test_interrupted_wait_exits_130(repo: Path) -> None:
    hold_here(repo, "T")
    before = lock_path(repo, "T").read_bytes()
    with tty_orc("lock", "acquire", "T", "--wait", cwd=repo) as (proc, tty):
        tty.until("waiting for T")
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: to the wrapper (a shell) and orc
        assert proc.wait(30) == 130
        text = tty.rest()
        assert "interrupted" in text and "Traceback" not in text
    with tty_orc("lock", "wait", "T", cwd=repo, other_parent=False) as (proc, tty):
        tty.until("waiting for T")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
        text = tty.rest()
        assert "interrupted" in text and "Traceback" not in text
    assert lock_path(repo, "T").read_bytes() == before


def test_no_ansi_escapes_without_a_tty(repo: Path) -> None:
    hold_here(repo, "T")
    runs = [orc("lock", "status", "T", cwd=repo), orc("lock", "list", cwd=repo),
            orc_elsewhere("lock", "acquire", "T", cwd=repo),
            orc("lock", "status", "../x", cwd=repo)]
    assert [r.returncode for r in runs] == [0, 0, 1, 2]
    for r in runs:
        assert ESC not in r.stdout and ESC not in r.stderr, (r.stdout, r.stderr)
    assert runs[0].stdout.startswith("T: locked (yours)\n  Locked by: ")
    assert runs[1].stdout.startswith("T\theld\t")
    assert runs[2].stderr.startswith("orc: error: T is locked by ")
    assert runs[3].stderr.startswith("orc: error: invalid task id '../x'")
    assert [r.stderr for r in runs[:2]] == ["", ""] and [r.stdout for r in runs[2:]] == ["", ""]


def test_colour_on_a_tty_unless_no_color(repo: Path) -> None:
    with tty_orc("lock", "status", "../x", cwd=repo) as (proc, tty):
        assert proc.wait(30) == 2
        assert f"{ESC}[" in tty.rest()  # colour on a terminal…
    with tty_orc("lock", "status", "../x", cwd=repo, env={"NO_COLOR": "1"}) as (proc, tty):
        assert proc.wait(30) == 2
        text = tty.rest()
        assert "invalid task id" in text and ESC not in text  # …never with NO_COLOR


def test_solo_mode_acquires_and_writes_nothing(solo_repo: Path) -> None:
    proc = orc("lock", "acquire", "T", "--json", cwd=solo_repo)
    assert proc.returncode == 0
    out = one_json(proc)
    assert out["mode"] == "solo" and out["acquired"] is True
    check_lock(out["lock"])
    for args in (("lock", "heartbeat", "T"), ("lock", "status", "T"), ("lock", "list"),
                 ("lock", "wait", "T"), ("lock", "steal", "T"), ("lock", "clean"),
                 ("lock", "release", "T")):
        code, out = orc_json(*args, cwd=solo_repo)
        assert code == 0, (args, out)
        assert out["mode"] == "solo"
    assert orc_elsewhere("lock", "acquire", "T", cwd=solo_repo).returncode == 0
    assert orc("lock", "run", "T", "--", "sh", "-c", "exit 7", cwd=solo_repo).returncode == 7
    assert not (solo_repo / ".orc").exists()
