"""Help texts and usage errors (issue 11, point 5): every option and argument of every command
says what it is, ``orc --help`` lists every command with a summary and ends with the exit
statuses and the environment, and a usage error shows the subcommand's usage."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from conftest import orc

from orc_git.cli import build_parser

ENVIRONMENT = ("ORC_MODE", "ORC_HOME", "ORC_TEAM_URL", "ORC_TEAM_TOKEN", "ORC_TEAM_SECRET",
               "ORC_HOOKS=0", "NO_COLOR")  # DESIGN, "Modes and configuration"
EXIT_STATUSES = ("0", "1", "2", "3", "124", "130")  # DESIGN, "CLI contract"


def _commands(parser: argparse.ArgumentParser, path: str) -> Iterator[
        tuple[str, argparse.ArgumentParser, dict[str, str | None]]]:
    """Every (sub)command's name, parser, and the summaries its subcommands have."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{path} {name}", sub, summaries
                yield from _commands(sub, f"{path} {name}")


def test_every_option_and_argument_has_help() -> None:
    parser = build_parser(plugin_commands=True)  # plugin commands too, when installed
    missing = []
    walked = 0
    for path, sub, summaries in _commands(parser, "orc"):
        walked += 1
        if not summaries.get(path.rsplit(" ", 1)[1]):
            missing.append(f"{path}: no one-line summary")
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if not action.help:  # argparse.SUPPRESS (a hidden option) is a deliberate choice
                name = "/".join(action.option_strings) or action.dest
                missing.append(f"{path} {name}")
    assert walked > 20  # the walk reached the nested commands
    assert missing == []


def test_top_level_help_lists_commands_exit_statuses_and_environment(tmp_path: Path) -> None:
    proc = orc("--help", cwd=tmp_path)
    assert proc.returncode == 0
    text = proc.stdout
    top = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in top.choices:
        assert f"\n    {name}" in text, name
    assert "merge-state\n" not in text  # every summary fits on the command's line
    status = text[text.index("exit status:"):text.index("environment:")]
    for code in EXIT_STATUSES:
        assert f"\n  {code} " in status, code
    assert "cancelled at the prompt" in status
    env = text[text.index("environment:"):]
    for name in ENVIRONMENT:
        assert f"\n  {name} " in env, name


def test_an_unrecognized_option_shows_the_subcommands_usage(tmp_path: Path) -> None:
    proc = orc("lock", "acquire", "T", "--bogus", cwd=tmp_path)
    assert proc.returncode == 2
    assert "unrecognized arguments: --bogus" in proc.stderr
    assert "usage: orc lock acquire [-h]" in proc.stderr
    assert "usage: orc [-h]" not in proc.stderr
    assert "\\n" not in proc.stderr  # a wrapped usage is shown on its lines, not escaped


def test_a_usage_error_found_by_the_command_shows_its_usage(repo: Path) -> None:
    proc = orc("lock", "run", "T", cwd=repo)
    assert proc.returncode == 2
    assert "orc lock run needs a command" in proc.stderr
    assert "usage: orc lock run [-h]" in proc.stderr


def test_a_usage_error_with_json_is_one_object(tmp_path: Path) -> None:
    proc = orc("task", "state", "T", "--bogus", "--json", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout.count("\n") == 1 and '"code": "USAGE"' in proc.stdout
    assert "usage:" not in proc.stderr


def test_every_summary_fits_on_its_commands_line(tmp_path: Path) -> None:
    text = orc("--help", cwd=tmp_path, env={"COLUMNS": "80"}).stdout
    listing = text[text.index("commands:"):text.index("exit status:")].splitlines()[2:]
    assert all(line.startswith("    ") and not line.startswith("     ")
               for line in listing if line), listing
