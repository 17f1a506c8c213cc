"""The hooks orc-git calls (entry point ``team = orc_team.plugin`` in group ``orc_git``).

Kept small and cheap to import: orc-git loads it for every plugin command, so the server and its
dependencies are imported only when ``orc team serve`` actually runs.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from orc_git import hookimpl

if TYPE_CHECKING:
    from orc_git.context import Context
    from orc_git.doctor import Check
    from orc_git.locking.base import Locker
    from orc_git.plugin.hookspecs import LockerContext
    from orc_git.publish import EventSink


@hookimpl
def orc_git_cli_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    from orc_team.cli import add_parser, add_resource_parser

    add_parser(subparsers)
    add_resource_parser(subparsers)


@hookimpl
def orc_git_locker(mode: str, context: LockerContext) -> Locker | None:
    """Team mode's locker: ``TeamLocker``, i.e. CompositeLocker(WebSocketLocker, FileLocker).
    ``Context.locker(pid)`` then asks it ``for_pid(pid)`` for another holder process."""
    if mode != "team":
        return None
    from orc_team.client.team import team_locker

    return team_locker(context)


@hookimpl
def orc_git_event_sink(context: Context) -> EventSink | None:
    """Team mode's sink: the durable outbox in ``.orc/local/`` and its background sender."""
    if context.mode != "team":
        return None
    from orc_team.client.sink import team_sink

    return team_sink(context)


@hookimpl
def orc_git_doctor(context: Context) -> list[Check]:
    """The team server, the token and the outbox, in team mode."""
    from orc_team.doctor import checks

    return checks(context)
