"""``orc task new|state|show`` and ``orc tasks [--team]``: committed task state."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from orc_git.cli.output import Output
from orc_git.context import Context
from orc_git.errors import InvalidInput, StateUnreadable
from orc_git.locking.info import readable_time
from orc_git.mergestate import merge_files
from orc_git.state import (
    STATUSES,
    TaskState,
    create_task,
    iter_states,
    read_state,
    read_task,
    write_state,
)

STALE_AFTER = 3600.0


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def add_parsers(sub: argparse._SubParsersAction[Any]) -> None:
    task = sub.add_parser("task", help="create a task, change or show its committed state")
    actions = task.add_subparsers(dest="task_command", metavar="ACTION", required=True)
    p = actions.add_parser("new", help="create .orc/tasks/TASK/task.yaml and state.yaml")
    p.add_argument("task", metavar="TASK", help="the task id")
    p.add_argument("--title", default="", help="a one-line title for task.yaml")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_new)
    p = actions.add_parser("state", help="change a task's state (fenced by your lease's token)")
    p.add_argument("task", metavar="TASK", help="the task id")
    p.add_argument("--status", choices=STATUSES, help="the new status")
    p.add_argument("--phase", help="the phase the task is in (free text)")
    p.add_argument("--iteration", type=_count, help="the iteration count (a whole number)")
    p.add_argument("--token", type=_count, help="the lease token this write is made under "
                   "(default: your lease's)")
    p.add_argument("--force", action="store_true",
                   help="write even though another holder has the lease")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_state)
    p = actions.add_parser("show", help="a task's definition, state and lease")
    p.add_argument("task", metavar="TASK", help="the task id")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("tasks", help="every task's state (--team: on all remote branches)")
    p.add_argument("--team", action="store_true", help="read every remote-tracking branch")
    p.add_argument("--stale-after", type=float, default=STALE_AFTER, metavar="S",
                   help="flag `running` states unchanged for S seconds (default 3600)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("merge-state", help="git's merge driver for state.yaml: keep the "
                       "newer state", description="git's merge driver for state.yaml (installed "
                       "by `orc hooks install`): keep the newer of two states")
    p.add_argument("base", metavar="BASE", help="the common ancestor's version (git's %%O)")
    p.add_argument("ours", metavar="OURS", help="our version, where the result goes (%%A)")
    p.add_argument("theirs", metavar="THEIRS", help="their version (%%B)")
    p.add_argument("path", metavar="PATH", nargs="?", default="state.yaml",
                   help="the file's path in the repository, for messages (%%P)")
    p.set_defaults(func=cmd_merge_state)


def _context(out: Output) -> Context:
    ctx = Context.discover()
    out.mode = ctx.mode
    return ctx


def cmd_new(args: argparse.Namespace, out: Output) -> int:
    ctx = _context(out)
    task, state = create_task(ctx, args.task, args.title)
    out.say(f"created {os.path.relpath(ctx.repo.tasks_dir / task.id)} (commit it to share it)")
    out.result({"task": task._asdict(), "state": state.to_json()})
    return 0


def cmd_state(args: argparse.Namespace, out: Output) -> int:
    ctx = _context(out)
    state = write_state(ctx, args.task, status=args.status, phase=args.phase,
                        iteration=args.iteration, token=args.token, force=args.force,
                        holder_pid=os.getppid())
    out.say(f"{args.task}: {state.summary()}"
            + (f" (token {state.token})" if state.token is not None else ""))
    out.result({"state": state.to_json()})
    return 0


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    ctx = _context(out)
    task = read_task(ctx.repo.tasks_dir, args.task)
    state = read_state(ctx.repo.tasks_dir, args.task)
    lease = ctx.locker().is_locked(args.task)
    if task is None and state is None:
        raise InvalidInput(f"no task {args.task} here (create it with `orc task new`)")
    if task is not None:
        out.line(f"{task.id}: {task.title or '(no title)'}  created by {task.created_by} at "
                 f"{readable_time(task.created_at)}")
    if state is not None:  # no token (never written under a lease): nothing said, no "None"
        token = "" if state.token is None else f"  token {state.token}"
        out.line(f"  state: {state.summary()}{token}")
    out.line(f"  lease: {'none' if not lease.locked else lease.who()}"
             + (f" (stale: {lease.stale_reason})" if lease.stale else ""))
    out.result({"task": task._asdict() if task else None,
                "state": state.to_json() if state else None, "lock": lease.to_json()})
    return 0


def _row(task: str, state: TaskState | None, stale_after: float) -> dict[str, Any]:
    age = state.age() if state else None
    flagged = bool(state and state.status == "running" and age is not None and age > stale_after)
    return {"task_id": task, "state": state.to_json() if state else None,
            "stale_running": flagged}


def cmd_tasks(args: argparse.Namespace, out: Output) -> int:
    ctx = _context(out)
    rows: list[dict[str, Any]] = []
    if args.team:
        from orc_git.teamview import team_states  # GitPython: only `tasks --team` pays for it

        for t in team_states(ctx.repo.worktree):
            row = _row(t.task_id, t.state, args.stale_after)
            row["branches"], row["problems"] = t.branches, t.problems
            rows.append(row)
    else:
        leases = {i.task_id: i for i in ctx.locker().list_locks()}
        for task, seen in iter_states(ctx.repo.tasks_dir):
            if isinstance(seen, StateUnreadable):
                rows.append({"task_id": task, "state": None, "stale_running": False,
                             "problems": [seen.message]})
                continue
            row = _row(task, seen, args.stale_after)
            lease = leases.get(task)
            row["lock"] = lease.to_json() if lease else None
            rows.append(row)
    for row in rows:
        state = row["state"]
        where = (f"{state['status']:<10} {state['phase'] or '-':<12} "
                 f"{state['updated_by']}@{state['host']}  since "
                 f"{readable_time(state['updated_at'])}"
                 if state else "unreadable: " + "; ".join(row.get("problems", [])))
        flag = "  STALE? (no progress)" if row["stale_running"] else ""
        extra = f"  [{len(row['branches'])} branch(es)]" if "branches" in row else ""
        lock = row.get("lock")
        held = f"  locked by {lock['owner']}" if lock and lock["locked"] else ""
        out.line(f"{row['task_id']:<24} {where}{held}{extra}{flag}")
    if not rows:
        out.say("no tasks" + (" on remote-tracking branches" if args.team else ""))
    out.result({"tasks": rows})
    return 0


def cmd_merge_state(args: argparse.Namespace, out: Output) -> int:
    decision = merge_files(Path(args.base), Path(args.ours), Path(args.theirs))
    out.say(f"orc: {args.path}: kept {decision.winner.name} "
            f"({decision.winner.state.status} by {decision.winner.state.updated_by}): "
            f"{decision.reason}")
    return 0
