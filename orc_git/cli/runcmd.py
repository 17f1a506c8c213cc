"""``orc run TASK [--project P] [--ttl S] [--wait] [--timeout S] -- CMD [ARG...]``: the executor.

``orc lock run`` (the same lease, waiting, conflict prompt, signal forwarding and exit statuses)
plus the publisher: CMD's output passes through unchanged (:mod:`orc_git.executor.child`) while
each read's lines become ``task.transcript`` events, and the run's start and end become
``task.started`` and ``task.completed`` / ``task.failed`` (:mod:`orc_git.executor.session`).
There is no ``--json``: stdout belongs to CMD.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from orc_git.cli.answer import answered, granted_how
from orc_git.cli.catchup import add_option, catch_up
from orc_git.cli.lock import _acquire, _context, _seconds, _ttl
from orc_git.cli.output import Output
from orc_git.errors import CommandNotRunnable, UsageError

MAX_PROJECT = 100


def _project(text: str) -> str:
    if not text or len(text) > MAX_PROJECT or not text.isprintable():
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_PROJECT} printable characters")
    return text


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("run", help="run a command under the task's lease and publish the run",
                       epilog="the command follows `--`: orc run TASK [options] -- CMD [ARG...]")
    p.add_argument("task", metavar="TASK", help="the task id")
    p.add_argument("--project", type=_project,
                   help="the project the run's events and locks belong to (default: "
                        "team.project)")
    p.add_argument("--ttl", type=_ttl, help="seconds the lease lives without a heartbeat")
    p.add_argument("--wait", action="store_true", help="wait until the lease is free")
    p.add_argument("--timeout", type=_seconds, help="give up waiting after S seconds "
                   "(implies --wait; exit 124)")
    add_option(p)
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace, out: Output) -> int:
    from orc_git.executor.child import pump, spawn
    from orc_git.executor.session import RunSession, use_project
    from orc_git.lease import Lease
    from orc_git.locking.heartbeat import shared_heartbeater

    argv: list[str] = args.command_argv
    if not argv:
        raise UsageError("orc run needs a command: orc run TASK [options] -- CMD [ARG...]")
    ctx = _context(out)
    use_project(ctx, args.project)  # before the locker exists: team locks carry the project
    info = _acquire(ctx, out, args, None)
    ttl = info.ttl or ctx.config.ttl
    # A lost lease is said on stderr at once: its log line goes through the CLI's log handler.
    lease = Lease(ctx.locker(), info, ctx.heartbeat_interval(ttl))
    catch_up(ctx, out, args, info, lease.release)
    if ctx.mode != "solo":
        shared_heartbeater().add(lease)
    session: RunSession | None = None
    try:
        session = RunSession(ctx, lease, args.project)
        command = shlex.join(argv)
        if ctx.mode != "solo":
            answered(out, lease.locker)
            out.say(f"holding {args.task}{granted_how(lease.locker)} (token {info.token}) "
                    f"while `{command}` runs")
        session.begin()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            child, streams = spawn(argv)
        except CommandNotRunnable as exc:
            session.finish(exc.exit_code, error=exc.message)
            raise
        session.started(command, child.pid)
        outcome = pump(child, streams, session.publisher.transcript)
        session.finish(outcome.exit_code, outcome.signal_name)
        return outcome.exit_code
    finally:
        try:
            if session is not None:
                session.close()  # delivered while still the holder: see RunSession.close
        finally:
            lease.release()
