"""``orc team …`` when the team plugin is not installed: one clear failure naming the command
that installs it, instead of argparse's "invalid choice: 'team'"."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from orc_git.cli.output import Output
from orc_git.context import TEAM_INSTALL_COMMAND
from orc_git.errors import PluginMissing

MISSING = ("`orc team` needs the orc-team plugin, which is not installed: install it with "
           f"`{TEAM_INSTALL_COMMAND}`")


def add_parser_if_missing(sub: argparse._SubParsersAction[Any]) -> None:
    if "team" in sub.choices:
        return
    # No prefix character: `--help` or any option after `team` is an argument like the others,
    # so every `orc team …` reaches the one message.
    p = sub.add_parser("team", add_help=False, prefix_chars="\0",
                       help=f"team mode (not installed: `{TEAM_INSTALL_COMMAND}`)")
    p.add_argument("rest", nargs="*")
    p.set_defaults(func=_missing)


def _missing(args: argparse.Namespace, out: Output) -> NoReturn:
    raise PluginMissing(MISSING)
