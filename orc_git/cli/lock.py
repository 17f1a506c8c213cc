"""``orc lock …``: the lease commands.

A lease taken with ``orc lock acquire`` belongs to the calling (parent) process, usually a shell or
a script: it stays held while that process lives and ``orc lock heartbeat`` keeps it fresh.
``orc lock run`` holds the lease itself and heartbeats while the command runs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Any

from orc_git.cli import prompt
from orc_git.cli.answer import answered, fallback_note, granted_how, source_line
from orc_git.cli.catchup import add_option, behind_json, catch_up
from orc_git.cli.output import LIST_HEADER, Output, describe, list_row
from orc_git.config import MAX_TTL
from orc_git.context import Context
from orc_git.errors import Cancelled, CommandNotRunnable, LockHeld, TimedOut, UsageError
from orc_git.lease import Lease, acquire_waiting
from orc_git.locking.base import Locker, can_force
from orc_git.locking.heartbeat import shared_heartbeater
from orc_git.locking.info import LockInfo
from orc_git.locking.wait import wait_free


def _ttl(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if not 1 <= value <= MAX_TTL:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_TTL} seconds")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < 1e9:
        raise argparse.ArgumentTypeError("must be a non-negative number of seconds")
    return value


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    lock = sub.add_parser("lock", help="task leases").add_subparsers(
        dest="lock_command", metavar="ACTION", required=True)

    def cmd(name: str, func: Any, help: str, json: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = lock.add_parser(name, help=help)
        if name not in ("list", "clean"):
            p.add_argument("task", metavar="TASK", help="the task id")
        if json:
            p.add_argument("--json", action="store_true", help="one JSON object on stdout")
        p.set_defaults(func=func)
        return p

    def waiting(p: argparse.ArgumentParser) -> None:
        p.add_argument("--ttl", type=_ttl, help="seconds the lease lives without a heartbeat")
        p.add_argument("--wait", action="store_true", help="wait until the lease is free")
        p.add_argument("--timeout", type=_seconds, help="give up waiting after S seconds "
                       "(implies --wait; exit 124)")

    p = cmd("acquire", cmd_acquire, "take the lease for the calling process")
    p.set_defaults(failure_fields={"acquired": False})
    waiting(p)
    p.add_argument("--force", action="store_true", help="take it even from a live holder")
    add_option(p)
    p = cmd("release", cmd_release, "give the lease up")
    p.add_argument("--force", action="store_true", help="release another holder's lease")
    cmd("heartbeat", cmd_heartbeat, "renew your lease")
    cmd("status", cmd_status, "who holds a task's lease")
    p = cmd("list", cmd_list, "every lease in the repository")
    p.add_argument("--stale", action="store_true", help="only stale leases")
    p = cmd("wait", cmd_wait, "wait until a lease is released or goes stale")
    p.add_argument("--timeout", type=_seconds, help="give up after S seconds (exit 124)")
    cmd("steal", cmd_steal, "acquire --force, recorded as stolen").set_defaults(
        failure_fields={"acquired": False})
    cmd("clean", cmd_clean, "remove stale leases")
    p = cmd("run", cmd_run, "hold the lease while a command runs")
    p.set_defaults(failure_fields={"acquired": False})
    waiting(p)
    p.add_argument("--force", action="store_true", help="take it even from a live holder")
    add_option(p)
    p.epilog = ("the command follows `--`: orc lock run TASK [options] -- CMD [ARG...]; with "
                "--json the acquire's JSON object is stdout's first line, CMD's output follows")


def _context(out: Output) -> Context:
    ctx = Context.discover()
    out.mode = ctx.mode
    return ctx


def _progress(out: Output, task: str, locker: Locker | None = None) -> Any:
    return prompt.waiting_lines(out, task, locker)


def _acquire(ctx: Context, out: Output, args: argparse.Namespace, pid: int | None,
             force: bool = False, locker: Locker | None = None) -> LockInfo:
    locker = locker or ctx.locker(pid)
    wait = bool(args.wait or args.timeout is not None)
    task = args.task
    try:
        return acquire_waiting(locker, task, ttl=args.ttl, wait=wait, timeout=args.timeout,
                               force=force, progress=_progress(out, task, locker))
    except LockHeld as exc:
        # A refusal says where it was decided too (a fallback cannot see the server's holder).
        args.failure_fields = {**(getattr(args, "failure_fields", None) or {}),
                               **answered(out, locker)}
        if out.json or not sys.stdin.isatty() or exc.lock is None:
            raise
        choice = prompt.ask(exc.lock, can_force(locker, task) is not False)
        if choice == prompt.WAIT:
            return acquire_waiting(locker, task, ttl=args.ttl, wait=True, timeout=None,
                                   progress=_progress(out, task, locker))
        if choice == prompt.FORCE:
            return locker.acquire(task, ttl=args.ttl, force=True)
        raise Cancelled(f"cancelled: {task} stays locked by {exc.lock.who()}",
                        exc.lock) from None
    finally:
        out.clear_progress()


def cmd_acquire(args: argparse.Namespace, out: Output) -> int:
    ctx = _context(out)
    locker = ctx.locker(os.getppid())
    info = _acquire(ctx, out, args, os.getppid(), force=args.force, locker=locker)
    source = answered(out, locker)
    behind = catch_up(ctx, out, args, info, lambda: locker.release(args.task))
    if ctx.mode == "solo":
        out.say(f"solo mode: {args.task} needs no lock (nothing written)")
    else:
        out.say(f"acquired {args.task}{granted_how(locker)} (token {info.token}, ttl "
                f"{info.ttl} s); keep it with `orc lock heartbeat {args.task}`, give it up "
                f"with `orc lock release {args.task}`")
    out.line(str(info.token) if info.token is not None else "")
    out.result({"acquired": True, "lock": info.to_json(), **source,
                "behind": behind_json(behind)})
    return 0


def cmd_steal(args: argparse.Namespace, out: Output) -> int:
    args.force, args.wait, args.timeout, args.ttl = True, False, None, None
    return cmd_acquire(args, out)


def cmd_release(args: argparse.Namespace, out: Output) -> int:
    ctx = _context(out)
    locker = ctx.locker(os.getppid())
    before = locker.is_locked(args.task)
    released = locker.release(args.task, force=args.force)
    source = answered(out, locker)
    was_stale = before.stale_reason if released and before.stale else None
    if was_stale is not None:
        out.warn(f"{args.task}: {_stale_because(before)}; released")
    out.say(f"released {args.task}" if released else f"{args.task} was not locked")
    out.result({"released": released, "lock": before.to_json(), "was_stale": was_stale,
                **source})
    return 0


def _stale_because(info: LockInfo) -> str:
    if info.stale_reason == "expired":
        return f"the lease had expired at {info.expires_at} (no heartbeat within {info.ttl} s)"
    if info.stale_reason == "holder-dead":
        return f"its holder process had ended ({info.who()})"
    return f"the lease was unreadable ({info.problem})"


def cmd_heartbeat(args: argparse.Namespace, out: Output) -> int:
    ctx = _context(out)
    locker = ctx.locker(os.getppid())
    before = locker.is_locked(args.task)
    info = locker.heartbeat(args.task)
    source = answered(out, locker)
    was_stale = before.stale_reason if before.stale else None
    if was_stale is not None:
        # Nobody was granted the task meanwhile (a grant would have refused this renewal), so
        # the fencing token is still the newest: renewing is the truth, said aloud.
        out.warn(f"{args.task}: {_stale_because(before)}; nobody took it over, so it is renewed "
                 f"and token {info.token} is still yours")
    out.say(f"renewed {args.task} until {info.expires_at}")
    out.result({"lock": info.to_json(), "was_stale": was_stale, **source})
    return 0


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    ctx = _context(out)
    locker = ctx.locker()
    info = locker.is_locked(args.task)
    for line in describe(info):
        out.line(line)
    where = source_line(locker)
    if where is not None:
        out.line(where)
    out.result({"lock": info.to_json(), **answered(out, locker)})
    return 0


def cmd_list(args: argparse.Namespace, out: Output) -> int:
    ctx = _context(out)
    locker = ctx.locker()
    locks = [i for i in locker.list_locks() if i.stale or not args.stale]
    source = answered(out, locker)
    if not locks:
        out.say("no stale leases" if args.stale else "no leases")
    out.table(LIST_HEADER, [list_row(i, sys.stdout.isatty()) for i in locks])
    out.result({"locks": [i.to_json() for i in locks], **source})
    return 0


def cmd_wait(args: argparse.Namespace, out: Output) -> int:
    ctx = _context(out)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    locker = ctx.locker()
    try:
        free = wait_free(locker, args.task, deadline, _progress(out, args.task, locker))
    finally:
        out.clear_progress()
    if not free:
        args.failure_fields = answered(out, locker)
        raise TimedOut(f"timed out after {args.timeout} s waiting for {args.task}")
    info = locker.is_locked(args.task)
    source = answered(out, locker)
    note = fallback_note(locker)
    out.say(f"{args.task} is free{note}" if not info.locked else
            f"{args.task} is stale ({info.stale_reason}){note}")
    out.result({"lock": info.to_json(), **source})
    return 0


def cmd_clean(args: argparse.Namespace, out: Output) -> int:
    ctx = _context(out)
    locker = ctx.locker()
    removed = locker.clean()
    source = answered(out, locker)
    for i in removed:
        out.row(i.task_id, i.stale_reason, i.owner or "-")
    out.say(f"removed {len(removed)} stale lease(s)")
    out.result({"removed": [i.to_json() for i in removed], **source})
    return 0


def cmd_run(args: argparse.Namespace, out: Output) -> int:
    argv = args.command_argv
    if not argv:
        raise UsageError("orc lock run needs a command: orc lock run TASK -- CMD [ARG...]")
    ctx = _context(out)
    info = _acquire(ctx, out, args, None, force=args.force)

    # A lost lease is said on stderr at once: its log line goes through the CLI's log handler.
    ttl = info.ttl or ctx.config.ttl
    lease = Lease(ctx.locker(), info, ctx.heartbeat_interval(ttl))
    behind = catch_up(ctx, out, args, info, lease.release)
    if ctx.mode != "solo":
        shared_heartbeater().add(lease)
    if out.json:
        out.result({"acquired": True, "lock": info.to_json(), **answered(out, lease.locker),
                    "behind": behind_json(behind)})
        out.json = False  # stdout is CMD's from here: a failure to start it is said on stderr
    elif ctx.mode != "solo":
        answered(out, lease.locker)
        out.say(f"holding {args.task}{granted_how(lease.locker)} (token {info.token}) while "
                f"`{shlex.join(argv)}` runs")
    try:
        return _run_child(argv)
    finally:
        lease.release()


def _run_child(argv: list[str]) -> int:
    try:
        child = subprocess.Popen(argv)
    except FileNotFoundError:
        raise CommandNotRunnable(f"command not found: {argv[0]}", 127) from None
    except PermissionError:
        raise CommandNotRunnable(f"command not executable: {argv[0]}", 126) from None
    except OSError as exc:
        raise CommandNotRunnable(f"cannot run {argv[0]}: {exc.strerror}", 126) from None

    def forward(signum: int, frame: object) -> None:
        child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                code = child.wait()
                break
            except KeyboardInterrupt:
                continue
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 128 - code if code < 0 else code

