"""The post-checkout / post-merge / post-rewrite report: what arrived, who runs what, what is stale.

Read from the working tree git just updated and from one ``git diff --name-only``; no GitPython,
no YAML parser for state files (:mod:`orc_git.flatyaml`), so it stays within the hooks' time
budget on a repository with a thousand tasks (``bench/hooks.py``).  Silence when there is
nothing to say.
"""

from __future__ import annotations

import os
from typing import TextIO

from orc_git.context import Context
from orc_git.errors import InvalidInput, StateUnreadable
from orc_git.gitcmd import NULL_SHA, changed_tasks
from orc_git.handover import Head
from orc_git.state import TaskState, iter_states, read_state

MAX_LINES = 10
STALE_RUNNING = 3600.0  # a `running` state unchanged this long (s) is flagged


def _range(hook: str, args: list[str]) -> tuple[str, str] | None:
    """The commits to compare: git's own for post-checkout; ORIG_HEAD..HEAD after a merge or a
    rebase (git resolves the names in the one ``git diff`` the report runs)."""
    if hook == "post-checkout":
        if len(args) < 3 or args[2] != "1":
            return None  # a file checkout, not a branch checkout
        return args[0], args[1]
    if hook == "post-rewrite" and args[:1] == ["amend"]:
        return None  # an amend brings nothing from anyone else
    return "ORIG_HEAD", "HEAD"


def _ago(state: TaskState) -> str:
    age = state.age()
    if age is None:
        return state.updated_at
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if age >= size:
            return f"{int(age // size)} {unit} ago"
    return "just now"


def _describe(state: TaskState) -> str:
    bits = [state.status]
    if state.phase:
        bits.append(state.phase)
    if state.iteration is not None:
        bits.append(f"iteration {state.iteration}")
    return f"{' / '.join(bits)} by {state.updated_by}@{state.host} ({_ago(state)})"


def _limit(lines: list[str], what: str) -> list[str]:
    if len(lines) <= MAX_LINES:
        return lines
    return [*lines[:MAX_LINES], f"  … and {len(lines) - MAX_LINES} more {what} (orc tasks)"]


def _left_behind(ctx: Context, heads: dict[str, Head]) -> list[str]:
    """Released tasks whose last holder left a commit this checkout lacks (two git calls at
    most, whatever the number of tasks: :meth:`Handover.lacking`)."""
    lacking = ctx.handover.lacking(h.commit for h in heads.values()) if heads else set()
    behind = [f"  {task}: {h.short}{f' on {h.branch}' if h.branch else ''}, left by "
              f"{h.by or 'unknown'}" for task, h in sorted(heads.items()) if h.commit in lacking]
    if not behind:
        return []
    return ["tasks whose last holder left commits this checkout lacks (merge them before "
            "running these):", *_limit(behind, "tasks")]


def post_hook_report(hook: str, args: list[str], stdin: TextIO) -> list[str]:
    ctx = Context.discover()
    if ctx.mode == "solo":
        return []
    git_dir = ctx.repo.git_dir
    if hook == "post-checkout" and ((git_dir / "rebase-merge").is_dir()
                                    or (git_dir / "rebase-apply").is_dir()):
        return []  # a rebase's own checkouts: post-rewrite reports the outcome
    cwd = str(ctx.repo.worktree)
    tasks_dir = ctx.repo.tasks_dir
    lines: list[str] = []
    span = _range(hook, args)
    arrived: set[str] = set()
    if span is not None and span[0] != span[1]:
        old = span[0] if span[0] != NULL_SHA else "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
        arrived = changed_tasks(old, span[1], cwd)
        changed = []
        for task in sorted(arrived):
            try:
                state = read_state(tasks_dir, task)
            except StateUnreadable as exc:
                changed.append(f"  {task}: {exc.message}")
                continue
            except InvalidInput:  # a committed directory whose name is no task id
                continue
            changed.append(f"  {task}: {_describe(state)}" if state else f"  {task}: removed")
        if changed:
            lines.append(f"task state changed in what {hook} brought:")
            lines += _limit(changed, "tasks")
    me = ctx.identity
    elsewhere, broken = [], []
    for task, seen in iter_states(tasks_dir, mentioning=b"running"):
        if isinstance(seen, StateUnreadable):
            broken.append(f"  {task}: {seen.message}")
        elif (seen.status == "running" and task not in arrived
              and (seen.updated_by, seen.host) != (me.user, me.host)):
            age = seen.age() or 0.0
            flag = "  (no progress for over an hour: stale?)" if age > STALE_RUNNING else ""
            elsewhere.append(f"  {task}: {_describe(seen)}{flag}")
    if elsewhere:
        lines.append("running elsewhere:")
        lines += _limit(elsewhere, "tasks")
    if broken:
        lines.append("unreadable task state of running tasks (fix or restore from git):")
        lines += _limit(broken, "tasks")
    if os.path.isdir(ctx.repo.lock_root):
        heads: dict[str, Head] = {}
        stale = [i for i in ctx.lock_store().list_locks(heads) if i.stale]
        lines += _left_behind(ctx, heads)
        if stale:
            # Team mode: these are file leases left by fallbacks; the server's are not read here.
            where = " of this clone, not the team server's" if ctx.mode == "team" else ""
            lines.append(f"stale local leases{where} (remove them with `orc lock clean`):")
            lines += _limit([f"  {i.task_id}: {i.stale_reason}, {i.who()}" for i in stale],
                            "leases")
    for extra in ctx.plugin_report(hook):
        lines.append(extra)
    return lines
