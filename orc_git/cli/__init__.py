"""``orc``: argparse front end. Every expected failure is an OrcError mapped to its exit status
here, in one place; nothing else reaches the user as a traceback."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from orc_git import __version__
from orc_git.cli import completion, doctor, githooks, helptext, lock, runcmd, setup, tasks, teamstub
from orc_git.cli.output import Output
from orc_git.errors import EXIT_INTERRUPTED, OrcError, UsageError

CORE_COMMANDS = ("init", "mode", "lock", "plugins", "task", "tasks", "hooks", "merge-state",
                 "run", "doctor", "completion")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message, usage=self.format_usage().strip())


class _StderrHandler(logging.Handler):
    """Log lines from the library (takeovers, lost leases) as ``orc: …`` narration."""

    def __init__(self, out: Output) -> None:
        super().__init__(logging.INFO)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        self.out.warn(record.getMessage())


def build_parser(plugin_commands: bool = False) -> argparse.ArgumentParser:
    parser = _Parser(prog="orc", description="Coordinate AI task runs in a git repository.",
                     epilog=helptext.EPILOG, formatter_class=helptext.TopHelpFormatter)
    parser.add_argument("--version", action="version", version=f"orc-git {__version__}")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND",
                                parser_class=_Parser)
    setup.add_parsers(sub)
    lock.add_parser(sub)
    runcmd.add_parser(sub)
    githooks.add_parser(sub)
    tasks.add_parsers(sub)
    doctor.add_parser(sub)
    completion.add_parser(sub)
    if plugin_commands:
        from orc_git.plugin.manager import load_plugins  # pluggy: only when plugins are wanted

        load_plugins().manager.hook.orc_git_cli_commands(subparsers=sub)
        teamstub.add_parser_if_missing(sub)
    return parser


def _wants_plugins(argv: Sequence[str]) -> bool:
    """Plugins are loaded for their commands only when the core cannot answer alone."""
    first = next((a for a in argv if not a.startswith("-")), None)
    if first is None:
        return "-h" in argv or "--help" in argv
    return first not in CORE_COMMANDS


def _tolerant_stdout() -> None:
    """A character the terminal's encoding lacks (``LANG=C``, ``PYTHONIOENCODING=ascii``) is
    printed as ``\\xNN`` rather than failing the command, as stderr always does."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None and getattr(sys.stdout, "errors", None) in ("strict",
                                                                          "surrogateescape"):
        reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    if "_ARGCOMPLETE" in os.environ:  # a TAB in a shell with `orc completion`'s script
        completion.complete(build_parser(plugin_commands=True))
    args_list = list(sys.argv[1:] if argv is None else argv)
    command_argv: list[str] = []
    if "--" in args_list:  # `orc [lock] run TASK [options] -- CMD [ARG...]`
        cut = args_list.index("--")
        args_list, command_argv = args_list[:cut], args_list[cut + 1 :]
    _tolerant_stdout()
    out = Output("--json" in args_list)
    handler = _StderrHandler(out)
    root = logging.getLogger("orc_git")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    args = None
    parser: argparse.ArgumentParser | None = None
    try:
        parser = build_parser(_wants_plugins(args_list))
        args, extra_args = parser.parse_known_args(args_list)
        if extra_args:  # said by the subcommand's parser: its usage, not the top level's
            helptext.chosen_parser(parser, args).error(
                f"unrecognized arguments: {' '.join(extra_args)}")
        args.command_argv = command_argv
        out.json = bool(getattr(args, "json", False))
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        code: int = args.func(args, out)
        return code
    except OrcError as exc:
        extra: dict[str, Any] = {}
        lock = getattr(exc, "lock", None)
        if lock is not None:
            extra["lock"] = lock.to_json()
        extra.update(getattr(args, "failure_fields", None) or {})  # e.g. "acquired": false
        if getattr(exc, "narrated", False) and not out.json:
            out.say(exc.message)  # a choice the user made (cancel), not a failure
        else:
            out.error(exc.code, exc.message, extra)
        usage = exc.details.get("usage")
        if usage is None and type(exc) is UsageError and parser is not None:
            usage = helptext.chosen_parser(parser, args).format_usage().strip()
        for line in (usage or "").splitlines():
            out.say(line)
        return exc.exit_code
    except KeyboardInterrupt:
        out.error("INTERRUPTED", "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    finally:
        root.removeHandler(handler)


def run() -> NoReturn:
    sys.exit(main())
