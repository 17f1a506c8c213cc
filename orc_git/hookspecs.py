"""The plugin hooks the core calls. Every hook is named ``orc_git_*``; implement them with
``@orc_git.hookimpl`` and expose the plugin through the ``orc_git`` entry-point group.

A plugin that wants its warnings shown by ``orc`` logs them under an ``orc_git.*`` logger (e.g.
``orc_git.team``): the CLI prints those on stderr as ``orc: …``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from orc_git.context import Context
    from orc_git.locking.base import Locker
    from orc_git.locking.info import LockEvent
    from orc_git.publish import EventSink

hookspec = pluggy.HookspecMarker("orc_git")
hookimpl = pluggy.HookimplMarker("orc_git")


@hookspec(firstresult=True)
def orc_git_locker(mode: str, context: Context) -> Locker | None:
    """Return the locker for ``mode`` (solo, p2p, team), or None to let another plugin answer."""


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
