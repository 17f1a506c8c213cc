"""``orc doctor``: every check of :mod:`orc_git.doctor`, one line each, exit 1 if one fails.

The report is the data asked for, so it goes to stdout; the verdict line goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from orc_git.cli.output import Output, paint
from orc_git.context import Context
from orc_git.doctor import Check, check_config, run_checks
from orc_git.errors import EXIT_REFUSED, ConfigError
from orc_git.repo import find_repo


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("doctor", help="check this setup (mode, config, hooks, server, token)",
                       description="Checks the mode and why, the config files in force, the "
                                   "identity, the git hooks, the plugins and, in team mode, the "
                                   "server, the token and the outbox. Exit 0 when every check "
                                   "passes, 1 when one fails.")
    p.add_argument("--json", action="store_true",
                   help='one JSON object: {"ok", "checks": [{name, ok, detail, hint, data}]}')
    p.set_defaults(func=cmd_doctor)


def _checks(out: Output) -> list[Check]:
    repo = find_repo()
    try:
        ctx = Context.discover()
    except ConfigError as exc:  # the config check says which file; nothing else can run
        return [Check("mode", False, f"unknown: {exc.message}"), check_config(repo)]
    out.mode = ctx.mode
    return run_checks(ctx)


def cmd_doctor(args: argparse.Namespace, out: Output) -> int:
    checks = _checks(out)
    width = max(len(c.name) for c in checks)
    for c in checks:
        mark = paint("ok  ", "32", sys.stdout) if c.ok else paint("FAIL", "31", sys.stdout)
        out.line(f"{mark}  {c.name:<{width}}  {c.detail}")
        if c.hint and not c.ok:
            out.line(f"      {'':<{width}}  fix: {c.hint}")
    failed = [c.name for c in checks if not c.ok]
    if failed:
        out.say(f"{len(failed)} problem(s): {', '.join(failed)}")
    else:
        out.say("everything checked is fine")
    out.result({"ok": not failed, "checks": [c.to_json() for c in checks]})
    return EXIT_REFUSED if failed else 0
