"""What ``orc --help`` says besides the commands (exit statuses, environment: DESIGN's "CLI
contract" and "Modes and configuration"), and which subcommand a usage error is about, so the
error shows that command's usage rather than the top level's."""

from __future__ import annotations

import argparse

EPILOG = """\
exit status:
  0    done
  1    refused: held by another holder, not the owner, or cancelled at the prompt;
       behind the last holder's commit with --require-latest (BEHIND)
  2    usage or invalid input
  3    any other failure (I/O, unreadable config, team server error)
  124  timed out waiting (--timeout)
  130  interrupted
  `orc lock run` and `orc run` exit with CMD's status (126 not executable, 127 not found)

environment:
  ORC_MODE             solo, p2p or team: overrides the configured mode
  ORC_HOME             replaces ~/.orc (identity, team token)
  ORC_TEAM_URL         the team server's base URL, ws://HOST:PORT (team.server_url)
  ORC_TEAM_TOKEN       your team token (team.token)
  ORC_TEAM_SECRET      server side: the secret team tokens are signed with
  ORC_HOOKS=0          orc's git hooks do nothing
  ORC_ALLOW_LOCKED=1   the pre-commit check lets a commit of a task another holder has through
  ORC_TEAM_AUTOSYNC=0  team commands never start a background outbox delivery
  NO_COLOR             no colour, even on a terminal

`orc COMMAND --help` shows a command's options; `orc completion SHELL` prints a shell
completion script (bash, zsh, fish).  Docs: docs/cli.md (JSON shapes), docs/files.md (config)."""


class TopHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The epilog's own layout kept, and every command's summary on the command's line:
    argparse measures subcommand names one indent short, so ``merge-state`` would wrap."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            longest = max((len(name) for name in action.choices), default=0)
            needed = longest + self._current_indent + 2 * self._indent_increment
            self._action_max_length = max(self._action_max_length, needed)


def chosen_parser(parser: argparse.ArgumentParser,
                  args: argparse.Namespace | None) -> argparse.ArgumentParser:
    """The innermost subcommand's parser that ``args`` went through (``orc lock acquire``'s for
    ``orc lock acquire T --bogus``), found by each subparsers action's ``dest``."""
    if args is None:
        return parser
    while True:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                name = getattr(args, action.dest, None) if action.dest else None
                if isinstance(name, str) and name in action.choices:
                    parser = action.choices[name]
                    break
        else:
            return parser
