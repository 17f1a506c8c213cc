"""The deciding hooks: pre-commit, pre-push (like ``git lfs locks --verify``) and pre-run.

Leases are local by design, so pre-commit refuses any lease file.  A task's committed state
belongs to whoever holds its lease: committing or pushing a state change for a task locked by
another holder is refused unless ``ORC_ALLOW_LOCKED=1`` (or ``--no-verify``) says it is meant.
"""

from __future__ import annotations

import os
import re
from typing import TextIO

from orc_git.context import Context
from orc_git.errors import InvalidInput, StateUnreadable
from orc_git.gitcmd import NULL_SHA, git, rev
from orc_git.handover import behind_message
from orc_git.locking.info import LockInfo, readable_time
from orc_git.state import STATUSES, read_state
from orc_git.taskid import check_task_id

OVERRIDE = "ORC_ALLOW_LOCKED"
_LEASE_FILE = re.compile(r"\.orc/(?:(?:.*/)?lock\.(?:yaml|fence|yaml\.tmp)|local/lock-domain)")
_STATE_FILE = re.compile(r"\.orc/tasks/([^/]+)/state\.yaml")


def _overridden() -> bool:
    return os.environ.get(OVERRIDE, "") not in ("", "0")


def _locked_by_others(ctx: Context, tasks: set[str]) -> list[LockInfo]:
    locker = ctx.locker()
    out = []
    for task in sorted(tasks):
        try:
            info = locker.is_locked(task)
        except InvalidInput:
            continue
        if info.locked and not info.stale and not info.mine:
            out.append(info)
    return out


def _sourced(ctx: Context, verdict: tuple[int, list[str]]) -> tuple[int, list[str]]:
    """The verdict, plus what its lock answers could not see (team mode's fallback to the file
    leases: a lock held on the team server is not checked while it is unreachable)."""
    from orc_git.locking.base import answer_of

    code, lines = verdict
    return code, [*lines, *(f"warning: {w}" for w in answer_of(ctx.locker()).warnings)]


def _refusal(what: str, locked: list[LockInfo], override_cmd: str) -> list[str]:
    lines = [f"{what} changes the state of {len(locked)} task(s) locked by someone else:"]
    lines += [f"  {i.task_id}: locked by {i.who()} since {readable_time(i.acquired_at)}"
              for i in locked]
    lines += ["Their state belongs to the lease holder; let them commit it, wait for the lease",
              f"(orc lock wait TASK), or override: {OVERRIDE}=1 {override_cmd} (or --no-verify)."]
    return lines


def pre_commit(ctx: Context) -> tuple[int, list[str]]:
    staged = git("diff", "--cached", "--name-only", "-z", "--diff-filter=ACMR",
                 cwd=ctx.repo.worktree).split("\0")
    leases = [p for p in staged if _LEASE_FILE.fullmatch(p)]
    if leases:
        return 1, ["refusing to commit lease files (leases are local, never committed):",
                   *(f"  {p}" for p in leases),
                   "unstage them with `git rm --cached <path>`; `orc init` adds them to "
                   ".gitignore"]
    tasks = {m.group(1) for p in staged if (m := _STATE_FILE.fullmatch(p))}
    if not tasks or _overridden():
        return 0, []
    locked = _locked_by_others(ctx, tasks)
    return _sourced(ctx, (1, _refusal("this commit", locked, "git commit …")) if locked
                    else (0, []))


def pre_push(ctx: Context, args: list[str], stdin: TextIO) -> tuple[int, list[str]]:
    if _overridden():
        return 0, []
    remote = args[0] if args else "origin"
    cwd = ctx.repo.worktree
    tasks: set[str] = set()
    for line in stdin:
        parts = line.split()
        if len(parts) != 4 or parts[1] == NULL_SHA:
            continue  # malformed, or a branch deletion
        local, remote_sha = parts[1], parts[3]
        if remote_sha != NULL_SHA and rev(remote_sha, cwd) is not None:
            span = [f"{remote_sha}..{local}"]
        else:
            span = [local, "--not", f"--remotes={remote}"]
        out = git("log", "--format=", "--name-only", "-z", *span, "--", ".orc/tasks", cwd=cwd,
                  check=False)
        tasks |= {m.group(1) for p in out.replace("\n", "\0").split("\0")
                  if (m := _STATE_FILE.fullmatch(p))}
    if not tasks:
        return 0, []
    locked = _locked_by_others(ctx, tasks)
    return _sourced(ctx, (1, _refusal("this push", locked, "git push …")) if locked
                    else (0, []))


def pre_run(ctx: Context, args: list[str]) -> tuple[int, list[str]]:
    """Before a task run: its lease is free, stale or yours, and its state is consistent."""
    if len(args) != 1:
        return 2, ["usage: hooks/pre-run TASK"]
    task = check_task_id(args[0])
    problems = []
    lease = ctx.locker().is_locked(task)
    if lease.locked and not lease.stale and not lease.mine:
        problems.append(f"{task} is locked by {lease.who()} since "
                        f"{readable_time(lease.acquired_at)}")
    try:
        state = read_state(ctx.repo.tasks_dir, task)
    except StateUnreadable as exc:
        problems.append(exc.message)
    else:
        if state is not None and state.status not in STATUSES:
            problems.append(f"{task}: unknown status {state.status!r}")
        if (state is not None and state.status == "running" and not lease.locked
                and (state.updated_by, state.host) != (ctx.identity.user, ctx.identity.host)):
            problems.append(f"{task}: state says running by {state.updated_by}@{state.host}, "
                            "but no lease is held here: check with them before running it")
    notes = []
    left = ctx.lock_store().left_head(task) if not lease.locked else None
    behind = ctx.handover.behind(left) if left is not None else None
    if behind is not None:
        text = behind_message(task, behind)
        if ctx.config.require_latest:
            problems.append(f"{text} (lock.require_latest is set)")
        else:
            notes.append(f"warning: {text}")
    if problems:
        return _sourced(ctx, (1, problems))
    return _sourced(ctx, (0, [*notes, f"{task}: ready to run"]))


def run(hook: str, args: list[str], stdin: TextIO) -> tuple[int, list[str]]:
    ctx = Context.discover()
    if ctx.mode == "solo" and hook != "pre-commit":
        return 0, []
    if hook == "pre-commit":
        return pre_commit(ctx)
    if hook == "pre-push":
        return pre_push(ctx, args, stdin)
    return pre_run(ctx, args)
