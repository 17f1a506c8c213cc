"""The plugin hooks the core calls. Every hook is named ``orc_git_*``; implement them with
``@orc_git.hookimpl`` and expose the plugin through the ``orc_git`` entry-point group.

A plugin that wants its warnings shown by ``orc`` logs them under an ``orc_git.*`` logger (e.g.
``orc_git.team``): the CLI prints those on stderr as ``orc: …``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from orc_git.config import Config
    from orc_git.context import Context
    from orc_git.doctor import Check
    from orc_git.handover import Handover
    from orc_git.locking.base import Locker
    from orc_git.locking.filelocker import FileLocker
    from orc_git.locking.info import LockEvent, LockInfo
    from orc_git.publish import EventSink
    from orc_git.repo import RepoPaths

hookspec = pluggy.HookspecMarker("orc_git")
hookimpl = pluggy.HookimplMarker("orc_git")


class LockerContext(Protocol):
    """What a locker factory (``orc_git_locker``) is given: the repository and its settings, the
    event callback its locker reports lease events to, and the file lease, the locker a team
    locker falls back on.  :class:`orc_git.context.Context` is one."""

    config: Config
    mode: str
    repo: RepoPaths

    @property
    def ttl(self) -> int: ...

    def emit(self, kind: str, task_id: str, lock: LockInfo | None,
             previous: LockInfo | None = None, mode: str | None = None) -> None: ...

    def file_locker(self, pid: int | None = None) -> FileLocker: ...

    @property
    def handover(self) -> Handover:
        """The worktree's ``HEAD``, for the head a release records (:mod:`orc_git.handover`)."""
        ...


@hookspec(firstresult=True)
def orc_git_locker(mode: str, context: LockerContext) -> Locker | None:
    """Return the locker for ``mode`` (p2p, team; solo never asks), or None to let another
    plugin answer.  A locker that can act for another holder process (``orc lock acquire`` holds
    for the shell that ran it) implements :class:`orc_git.locking.base.PerProcessLocker`."""


@hookspec
def orc_git_lock_event(event: LockEvent) -> None:
    """A lease was acquired, released, taken over (expired, holder-dead, unreadable), stolen,
    found stale, or lost by its holder."""


@hookspec
def orc_git_task_event(event: dict[str, Any]) -> None:
    """A run's task event (``task.started``, ``task.phase``, ``task.completed``,
    ``task.failed``…; every one but ``task.transcript`` lines) as ``{event_type, task_id,
    project_id, event_id, payload}``, told by ``orc run`` and :func:`orc_git.run_context` as it
    is published.  Observers must be quick and must not raise: a failure is said once."""


@hookspec(firstresult=True)
def orc_git_event_sink(context: Context) -> EventSink | None:
    """Return where ``context.mode``'s task events go (team mode: the outbox and its sender),
    or None: then events only shape ``state.yaml``.  Called once per run."""


@hookspec
def orc_git_cli_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add subcommands to ``orc``; give each ``set_defaults(func=f)`` where
    ``f(args, out) -> int`` gets the parsed arguments and the :class:`orc_git.cli.output.Output`
    (set ``out.mode``; print data with ``out.line``, JSON with ``out.result``) and returns the
    exit status."""


@hookspec
def orc_git_hook_report(hook: str, context: Context) -> list[str] | None:
    """Lines to add to the report a git hook (post-checkout, post-merge…) prints."""


@hookspec
def orc_git_doctor(context: Context) -> list[Check] | None:
    """Checks to add to ``orc doctor`` (:class:`orc_git.doctor.Check`: name, ok, detail, hint,
    data) for ``context`` (its mode, config and repository): e.g. the team plugin checks its
    server, token and outbox in team mode and returns nothing in the others.  Keep each check
    bounded in time (a network call gets a timeout of a few seconds); a raised exception is
    shown as one failed check.  Never put a secret in a check."""
