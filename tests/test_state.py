"""Committed task state: creation, fenced writes, and the CLI over them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import HolderProcess, git, make_repo, orc, orc_json
from hostile import HOSTILE, assert_no_raw, assert_strict_json

from orc_git.context import Context
from orc_git.errors import InvalidInput, LockHeld, StaleToken, StateUnreadable
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
    for _ in range(2):  # tokens 1 and 2 granted in this clone
        assert orc("lock", "acquire", "T-1", cwd=repo).returncode == 0
        assert orc("lock", "release", "T-1", cwd=repo).returncode == 0
    assert orc("task", "state", "T-1", "--token", "2", "--status", "running",
               cwd=repo).returncode == 0
    proc = orc("task", "state", "T-1", "--token", "1", "--phase", "x", cwd=repo)
    assert proc.returncode == 1 and "token 2 was recorded" in proc.stderr
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


# -- hostile text in committed files (issue 8, points 4 and 10) ------------------------------


def _plant_hostile_task(repo: Path, task: str = "T-1") -> None:
    """task.yaml and state.yaml as a teammate could commit them: valid JSON scalars, so the
    fast reader takes them, holding a lone surrogate, control and bidi characters."""
    task_dir = repo / ".orc/tasks" / task
    task_dir.mkdir(parents=True)
    q = json.dumps
    (task_dir / "task.yaml").write_text(
        f"id: {q(task)}\ntitle: {q(HOSTILE)}\ncreated_by: {q(HOSTILE)}\n"
        f'created_at: "2024-05-01T10:00:00Z"\n')
    (task_dir / "state.yaml").write_text(
        f'task_id: {q(task)}\nstatus: "running"\nphase: {q(HOSTILE)}\niteration: 1\n'
        f'updated_at: "2024-05-01T10:00:00Z"\nupdated_by: {q(HOSTILE)}\nhost: {q(HOSTILE)}\n'
        "token: null\n")


@pytest.mark.parametrize("args", [("task", "show", "T-1"), ("tasks",)])
def test_hostile_committed_text_is_printed_escaped(repo: Path, args: tuple[str, ...]) -> None:
    _plant_hostile_task(repo)
    proc = orc(*args, cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert_no_raw(proc.stdout + proc.stderr)
    assert "\\ud800x\\n\\x1b[31morc: fake line\\u202e\\u2066\\x9b" in proc.stdout


@pytest.mark.parametrize("args", [("task", "show", "T-1"), ("tasks",)])
def test_hostile_committed_text_in_json_is_strict_utf8(repo: Path,
                                                       args: tuple[str, ...]) -> None:
    _plant_hostile_task(repo)
    proc = orc(*args, "--json", cwd=repo)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    [line] = proc.stdout.splitlines()
    out = json.loads(line)
    assert_strict_json(out)
    state = out["state"] if args[0] == "task" else out["tasks"][0]["state"]
    # the surrogate as the text a terminal shows; characters UTF-8 can carry are kept as they are
    assert state["phase"] == "\\ud800x\n\x1b[31morc: fake line\u202e\u2066\x9b"


def test_hostile_committed_text_on_a_remote_branch(repo: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", str(remote), cwd=tmp_path)
    git("remote", "add", "origin", str(remote), cwd=repo)
    _plant_hostile_task(repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "hostile", cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)
    git("fetch", "-q", "origin", cwd=repo)
    proc = orc("tasks", "--team", cwd=repo)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "\\ud800x\\n\\x1b[31morc" in proc.stdout
    assert_no_raw(proc.stdout + proc.stderr)
    proc = orc("tasks", "--team", "--json", cwd=repo)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert_strict_json(json.loads(proc.stdout))


BAD_TEXT = [("newline", "a\nb"), ("escape", "\x1b[31m"), ("bidi", "x\u202e"),
            ("surrogate", "\udcff"), ("too long", "p" * 1001)]


@pytest.mark.parametrize("value", [v for _, v in BAD_TEXT], ids=[k for k, _ in BAD_TEXT])
def test_state_writes_refuse_text_that_would_not_read_back_as_written(
        repo: Path, ctx: Context, value: str) -> None:
    """What orc writes it reads back and shows as written: a phase or title is at most 1,000
    printable characters.  (A 1,001-character phase used to make the state unreadable.)"""
    create_task(ctx, "T-1")
    before = (repo / ".orc/tasks/T-1/state.yaml").read_bytes()
    with pytest.raises(InvalidInput, match="printable characters"):
        write_state(ctx, "T-1", phase=value)
    with pytest.raises(InvalidInput, match="printable characters"):
        create_task(ctx, "T-2", title=value)
    assert (repo / ".orc/tasks/T-1/state.yaml").read_bytes() == before
    assert not (repo / ".orc/tasks/T-2").exists()
    if "\x00" not in value and not ("\ud800" <= value[0] <= "\udfff"):
        code, out = orc_json("task", "state", "T-1", "--phase", value, cwd=repo)
        assert code == 2 and out["error"]["code"] == "INVALID_INPUT"
        assert "\n" not in out["error"]["message"]
    write_state(ctx, "T-1", phase="p" * 1000)  # the limit itself is fine
    assert read_state(repo / ".orc/tasks", "T-1").phase == "p" * 1000  # type: ignore[union-attr]


# -- lock domains: tokens are compared only with tokens of the same clone (or server) ----------


def _two_clones(tmp_path: Path) -> tuple[Path, Path]:
    """Clone A (p2p, pushed to a bare remote with task T) and clone B cloned from it."""
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp_path)
    a = make_repo(tmp_path / "a")
    git("remote", "add", "origin", str(remote), cwd=a)
    create_task(Context.discover(a), "T")
    git("add", "-A", cwd=a)
    git("commit", "-qm", "task T", cwd=a)
    git("push", "-q", "origin", "main", cwd=a)
    git("clone", "-q", str(remote), "b", cwd=tmp_path)
    return a, tmp_path / "b"


def _lease_with_token(ctx: Context, task: str, token: int) -> int:
    """Acquire and release ``task`` until a grant gets ``token``; that lease is kept."""
    locker = ctx.locker()
    for _ in range(token):
        info = locker.acquire(task)
        if info.token == token:
            return token
        locker.release(task)
    raise AssertionError(f"no grant reached token {token}")


def test_a_state_pushed_from_another_clone_does_not_refuse_this_clones_holder(
        tmp_path: Path) -> None:
    a, b = _two_clones(tmp_path)
    ctx_a = Context.discover(a)
    _lease_with_token(ctx_a, "T", 5)
    recorded = write_state(ctx_a, "T", status="running", phase="A's", token=5)
    ctx_a.locker().release("T")
    assert recorded.lock_domain and recorded.token == 5
    git("commit", "-qam", "state from A", cwd=a)
    git("push", "-q", "origin", "main", cwd=a)
    git("pull", "-q", "origin", "main", cwd=b)

    ctx_b = Context.discover(b)
    lease = ctx_b.locker().acquire("T")
    assert lease.token == 1 and lease.lock_domain != recorded.lock_domain
    state = write_state(ctx_b, "T", phase="B's", token=lease.token)  # was STALE_TOKEN
    assert (state.token, state.lock_domain, state.phase) == (1, lease.lock_domain, "B's")
    assert f'lock_domain: "{lease.lock_domain}"' in (b / ".orc/tasks/T/state.yaml").read_text()
    # Within clone B, tokens are compared as ever: an older holder is refused.
    ctx_b.locker().release("T")
    newer = ctx_b.locker().acquire("T")
    write_state(ctx_b, "T", phase="B's newer", token=newer.token)
    with pytest.raises(StaleToken, match="lost its lease"):
        write_state(ctx_b, "T", phase="B's stale", token=lease.token)
    ctx_b.locker().release("T")


def test_cli_and_executor_api_in_a_clone_that_pulled_a_higher_token(tmp_path: Path) -> None:
    import orc_git

    a, b = _two_clones(tmp_path)
    ctx_a = Context.discover(a)
    _lease_with_token(ctx_a, "T", 5)
    write_state(ctx_a, "T", status="running", token=5)
    git("commit", "-qam", "state from A", cwd=a)
    git("push", "-q", "origin", "main", cwd=a)
    git("pull", "-q", "origin", "main", cwd=b)
    with orc_git.hold("T", repo=b) as lease:
        assert lease.token == 1 and lease.domain
        state = orc_git.set_state("T", lease=lease, phase="api", repo=b)
        assert (state.token, state.lock_domain) == (1, lease.domain)
    assert orc("lock", "acquire", "T", cwd=b).returncode == 0  # token 2, held by this process
    code, out = orc_json("task", "state", "T", "--phase", "cli", cwd=b)
    assert code == 0 and out["state"]["token"] == 2, out
    assert out["state"]["lock_domain"] == lease.domain
    assert orc("lock", "release", "T", cwd=b).returncode == 0


def test_after_git_clean_the_next_holder_writes_in_a_new_domain(repo: Path) -> None:
    ctx = Context.discover(repo)
    create_task(ctx, "T")
    _lease_with_token(ctx, "T", 5)
    old = write_state(ctx, "T", status="running", token=5)
    ctx.locker().release("T")
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "state", cwd=repo)
    git("clean", "-qfdX", cwd=repo)  # the leases, the fences and the domain id go
    assert not (repo / ".orc/tasks/T/lock.fence").exists()
    fresh = Context.discover(repo)
    lease = fresh.locker().acquire("T")
    assert lease.token == 1 and lease.lock_domain != old.lock_domain
    assert write_state(fresh, "T", phase="after clean", token=1).token == 1
    fresh.locker().release("T")


def test_a_deleted_fence_restarts_tokens_without_refusing_its_next_holder(repo: Path) -> None:
    """The domain id survives but ``lock.fence`` goes: the recorded token is above every token
    the fence has granted since, so it cannot fence them; fencing resumes from there."""
    ctx = Context.discover(repo)
    create_task(ctx, "T")
    _lease_with_token(ctx, "T", 5)
    old = write_state(ctx, "T", status="running", token=5)
    ctx.locker().release("T")
    os.unlink(repo / ".orc/tasks/T/lock.fence")
    fresh = Context.discover(repo)
    first = fresh.locker().acquire("T")
    assert first.token == 1 and first.lock_domain == old.lock_domain
    assert write_state(fresh, "T", phase="after reset", token=1).token == 1
    fresh.locker().release("T")
    second = fresh.locker().acquire("T")
    write_state(fresh, "T", phase="second", token=second.token)
    with pytest.raises(StaleToken):
        write_state(fresh, "T", phase="stale", token=first.token)
    fresh.locker().release("T")


def test_a_token_recorded_without_a_domain_refuses_nobody(ctx: Context, repo: Path) -> None:
    """A state written by an orc-git without lock domains: whose token it is is unknown."""
    create_task(ctx, "T")
    path = repo / ".orc/tasks/T/state.yaml"
    path.write_text(path.read_text().replace("token: null", "token: 9").replace(
        "lock_domain: null\n", ""))
    assert read_state(repo / ".orc/tasks", "T").lock_domain is None  # type: ignore[union-attr]
    lease = ctx.locker().acquire("T")
    assert write_state(ctx, "T", phase="x", token=lease.token).token == lease.token
    ctx.locker().release("T")


def test_a_malformed_lock_domain_makes_the_state_unreadable(ctx: Context, repo: Path) -> None:
    create_task(ctx, "T")
    path = repo / ".orc/tasks/T/state.yaml"
    path.write_text(path.read_text().replace("lock_domain: null", 'lock_domain: "a b\\u001b"'))
    with pytest.raises(StateUnreadable, match="lock_domain"):
        read_state(repo / ".orc/tasks", "T")
