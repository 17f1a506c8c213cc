"""Task ids become path components: anything but the documented shape is refused as invalid input
(exit 2, INVALID_INPUT) before a single file is touched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import orc, orc_json, tree_snapshot

from orc_git.context import Context
from orc_git.errors import EXIT_USAGE, InvalidInput
from orc_git.locking.base import NoOpLocker
from orc_git.taskid import check_task_id

VALID = ["TASK-AM-001", "a", "0", "A" * 100, "a.b_c-d", "x.y.z", "T-1.2", "abc_", "z-"]

# (label, id): labels keep pytest ids readable whatever the bytes
INVALID = [
    ("slash", "a/b"),
    ("leading-slash", "/etc"),
    ("backslash", "a\\b"),
    ("dotdot", ".."),
    ("dotdot-inside", "a..b"),
    ("parent-path", "../x"),
    ("dot", "."),
    ("newline", "a\nb"),
    ("trailing-newline", "abc\n"),
    ("nul", "a\x00b"),
    ("escape", "a\x1bb"),
    ("tab", "a\tb"),
    ("del", "a\x7fb"),
    ("space", "a b"),
    ("leading-space", " a"),
    ("trailing-space", "a "),
    ("too-long", "A" * 101),
    ("empty", ""),
    ("leading-dot", ".hidden"),
    ("leading-dash", "-x"),
    ("leading-underscore", "_x"),
    ("unicode-letter", "tâche"),
    ("unicode-digit", "TASK-\u0661"),
    ("colon", "a:b"),
    ("glob", "a*"),
]


@pytest.mark.parametrize("task_id", VALID)
def test_valid_ids_are_returned_unchanged(task_id: str) -> None:
    assert check_task_id(task_id) == task_id


@pytest.mark.parametrize("task_id", [t for _, t in INVALID], ids=[label for label, _ in INVALID])
def test_invalid_ids_are_refused(task_id: str) -> None:
    with pytest.raises(InvalidInput) as err:
        check_task_id(task_id)
    assert err.value.exit_code == EXIT_USAGE
    assert err.value.code == "INVALID_INPUT"


@pytest.mark.parametrize("value", [None, 5, b"TASK-1", ["T"]])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(InvalidInput):
        check_task_id(value)


def test_message_shows_the_id_escaped_and_bounded() -> None:
    with pytest.raises(InvalidInput) as err:
        check_task_id("\x1b[31m" + "x" * 500)
    message = err.value.message
    assert "\x1b" not in message  # repr'd: no raw escape reaches a terminal
    assert len(message) < 300
    assert "invalid task id" in message


@pytest.mark.parametrize("task_id", ["a/b", "../x", "a\x00b", "", "A" * 101])
def test_file_locker_refuses_before_touching_files(ctx: Context, repo: Path,
                                                   task_id: str) -> None:
    locker = ctx.locker()
    before = tree_snapshot(repo.parent)
    for call in (lambda: locker.acquire(task_id), lambda: locker.is_locked(task_id),
                 lambda: locker.release(task_id, force=True), lambda: locker.heartbeat(task_id)):
        with pytest.raises(InvalidInput):
            call()
    assert tree_snapshot(repo.parent) == before


def test_solo_locker_refuses_too() -> None:
    with pytest.raises(InvalidInput):
        NoOpLocker().acquire("a/b")
    with pytest.raises(InvalidInput):
        NoOpLocker().is_locked("../x")


# Through the real CLI.  NUL cannot travel in argv, so it is covered above in-process only.
CLI_INVALID = [(label, t) for label, t in INVALID if "\x00" not in t]


@pytest.mark.parametrize("task_id", [t for _, t in CLI_INVALID],
                         ids=[label for label, _ in CLI_INVALID])
def test_cli_acquire_refuses_and_creates_nothing(repo: Path, task_id: str) -> None:
    before = tree_snapshot(repo.parent)
    code, out = _acquire_json(repo, task_id)
    assert code == 2, out
    # argparse itself takes a leading '-' for an option (there is no `--` escape: the CLI
    # reserves `--` for commands), which is a usage error, exit 2 all the same
    expected = {"INVALID_INPUT", "USAGE"} if task_id.startswith("-") else {"INVALID_INPUT"}
    assert out["error"]["code"] in expected
    assert out["schema"] == 1
    if out["error"]["code"] == "INVALID_INPUT":
        assert out["mode"] == "p2p"
    assert tree_snapshot(repo.parent) == before
    assert not (repo / "a").exists()
    assert not (repo.parent / "x").exists()
    assert list((repo / ".orc" / "tasks").iterdir()) == []


def _acquire_json(repo: Path, task_id: str) -> tuple[int, dict[str, Any]]:
    proc = orc("lock", "acquire", task_id, "--json", cwd=repo)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, (proc.stdout, proc.stderr)
    return proc.returncode, json.loads(lines[0])


@pytest.mark.parametrize("command", ["acquire", "release", "status", "heartbeat", "steal",
                                     "wait"])
def test_every_lock_command_refuses_a_path_id(repo: Path, command: str) -> None:
    before = tree_snapshot(repo.parent)
    proc = orc("lock", command, "../x", cwd=repo)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "invalid task id" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert tree_snapshot(repo.parent) == before


def test_cli_json_refusal(repo: Path) -> None:
    code, out = orc_json("lock", "acquire", "a/b", cwd=repo)
    assert code == 2
    assert out["error"]["code"] == "INVALID_INPUT"
    assert "a/b" in out["error"]["message"]
    assert not (repo / ".orc" / "tasks" / "a").exists()


def test_lock_run_does_not_start_the_command_for_a_bad_id(repo: Path) -> None:
    marker = repo.parent / "ran"
    proc = orc("lock", "run", "a/b", "--", "touch", str(marker), cwd=repo)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()


def test_solo_mode_cli_refuses_too(solo_repo: Path) -> None:
    code, out = orc_json("lock", "acquire", "a/b", cwd=solo_repo)
    assert code == 2
    assert out["mode"] == "solo"
    assert out["error"]["code"] == "INVALID_INPUT"
    assert not (solo_repo / ".orc").exists()
