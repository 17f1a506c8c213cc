"""Committed task state: creation, fenced writes, and the CLI over them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import HolderProcess, orc, orc_json

from orc_git.context import Context
from orc_git.errors import LockHeld, StaleToken, StateUnreadable
from orc_git.state import create_task, read_state, write_state


def test_create_and_change_state(ctx: Context, repo: Path) -> None:
    task, state = create_task(ctx, "T-1", "first task")
    assert (task.id, task.created_by, state.status) == ("T-1", "alice", "created")
    new = write_state(ctx, "T-1", status="running", phase="implement", iteration=2)
    assert (new.status, new.phase, new.iteration, new.updated_by) == (
        "running", "implement", 2, "alice")
    assert read_state(repo / ".orc" / "tasks", "T-1") == new
    text = (repo / ".orc/tasks/T-1/state.yaml").read_text()
    assert 'status: "running"' in text and "token: null" in text


def test_write_under_lease_records_token_and_older_token_is_refused(ctx: Context,
                                                                     repo: Path) -> None:
    create_task(ctx, "T-1")
    lease = ctx.locker().acquire("T-1")
    state = write_state(ctx, "T-1", status="running", token=lease.token)
    assert state.token == lease.token
    ctx.locker().release("T-1")
    newer = ctx.locker().acquire("T-1")
    write_state(ctx, "T-1", phase="test", token=newer.token)
    with pytest.raises(StaleToken, match="lost its lease"):
        write_state(ctx, "T-1", phase="old holder", token=lease.token)
    assert read_state(repo / ".orc/tasks", "T-1").phase == "test"  # type: ignore[union-attr]
    ctx.locker().release("T-1")


def test_state_of_a_task_locked_by_another_holder_is_refused(ctx: Context, repo: Path,
                                                            holders: list[HolderProcess],
                                                            isolated_env: Path) -> None:
    create_task(ctx, "T-1")
    holders.append(HolderProcess(repo, "T-1"))
    (isolated_env / "config.yaml").write_text("identity: {user: bob}\n")
    bob = Context.discover(repo)
    with pytest.raises(LockHeld, match="its state belongs to that holder"):
        write_state(bob, "T-1", status="running")
    assert write_state(bob, "T-1", status="paused", force=True).updated_by == "bob"


def test_cli_task_commands(repo: Path) -> None:
    code, out = orc_json("task", "new", "T-1", "--title", "hello", cwd=repo)
    assert code == 0 and out["task"]["title"] == "hello"
    code, out = orc_json("task", "state", "T-1", "--status", "running", "--phase", "plan",
                         cwd=repo)
    assert code == 0 and out["state"]["status"] == "running"
    code, out = orc_json("task", "show", "T-1", cwd=repo)
    assert out["state"]["phase"] == "plan" and out["lock"]["locked"] is False
    code, out = orc_json("tasks", cwd=repo)
    assert [t["task_id"] for t in out["tasks"]] == ["T-1"]
    code, out = orc_json("task", "state", "T-1", "--status", "bogus", cwd=repo)
    assert code == 2 and out["error"]["code"] == "USAGE"
    code, out = orc_json("task", "new", "T-1", cwd=repo)
    assert code == 2 and "already exists" in out["error"]["message"]


def test_cli_stale_token_exit_1(repo: Path) -> None:
    assert orc("task", "new", "T-1", cwd=repo).returncode == 0
    assert orc("task", "state", "T-1", "--token", "5", "--status", "running",
               cwd=repo).returncode == 0
    proc = orc("task", "state", "T-1", "--token", "4", "--phase", "x", cwd=repo)
    assert proc.returncode == 1 and "token 5 was recorded" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_broken_state_file_is_a_clear_error(ctx: Context, repo: Path) -> None:
    create_task(ctx, "T-1")
    (repo / ".orc/tasks/T-1/state.yaml").write_text("status: [unclosed\n")
    with pytest.raises(StateUnreadable, match=r"state\.yaml is unreadable"):
        read_state(repo / ".orc/tasks", "T-1")
    code, out = orc_json("tasks", cwd=repo)
    assert code == 0 and "unreadable" in out["tasks"][0]["problems"][0]
    code, out = orc_json("task", "state", "T-1", "--status", "running", cwd=repo)
    assert code == 3 and out["error"]["code"] == "STATE_UNREADABLE"


def test_solo_state_writes_no_lease_files(solo_repo: Path, tmp_path: Path) -> None:
    ctx = Context.discover(solo_repo)
    create_task(ctx, "T-1")
    write_state(ctx, "T-1", status="running")
    files = sorted(os.listdir(solo_repo / ".orc/tasks/T-1"))
    assert files == ["state.yaml", "task.yaml"]


def test_executor_api_records_the_lease_token(repo: Path) -> None:
    import orc_git

    create_task(Context.discover(repo), "T-1")
    with orc_git.hold("T-1", repo=repo) as lease:
        state = orc_git.set_state("T-1", lease=lease, status="running", phase="plan",
                                  repo=repo)
    assert state.token == lease.token and state.phase == "plan"
    with orc_git.hold("T-1", repo=repo) as newer:
        orc_git.set_state("T-1", lease=newer, phase="test", repo=repo)
    with pytest.raises(StaleToken):
        orc_git.set_state("T-1", lease=lease, phase="late", repo=repo)
