"""``orc hooks install|uninstall|status``: the git hook shims, as people and scripts see them.

``status`` prints its table on stdout (it is the data asked for); ``install`` and ``uninstall``
narrate what they did on stderr.  A hook that install refuses (a foreign hook in front of an
existing ``.orc-previous``) does not stop the others: every hook is handled, then the command
exits 1 (refused) naming the refused hooks, with the whole report in ``--json``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orc_git.cli.output import Output
from orc_git.context import Context
from orc_git.errors import EXIT_REFUSED, OrcError
from orc_git.githooks.install import (
    HooksReport,
    HookState,
    default_python,
    install,
    status,
    uninstall,
)

if TYPE_CHECKING:  # it imports GitPython: only the `orc hooks` commands pay for it
    from orc_git.githooks import mergedriver


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    hooks = sub.add_parser("hooks", help="the git hooks that report and check task state")
    actions = hooks.add_subparsers(dest="hooks_command", metavar="ACTION", required=True)
    p = actions.add_parser("install", help="put orc's hooks where git runs them, chaining "
                                           "the hooks already there")
    p.add_argument("--force", action="store_true",
                   help="chain a foreign hook even when <hook>.orc-previous already exists "
                        "(that one is kept as <hook>.orc-previous.N)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_install)
    p = actions.add_parser("uninstall", help="remove orc's hooks and restore the ones they "
                                             "chained")
    p.add_argument("--force", action="store_true",
                   help="accepted for symmetry: uninstall never removes a hook that is not orc's")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_uninstall)
    p = actions.add_parser("status", help="which hooks are installed, chained or foreign")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_status)


def _mode() -> str | None:
    try:
        return Context.discover().mode
    except OrcError:
        return None


def _payload(report: HooksReport, driver: mergedriver.DriverState) -> dict[str, Any]:
    return {"hooks_dir": str(report.hooks_dir), "core_hooks_path": report.core_hooks_path,
            "hooks": [h.to_json() for h in report.hooks], "merge_driver": driver.to_json()}


def _where(report: HooksReport, out: Output) -> None:
    if report.core_hooks_path is None:
        return
    out.say(f"core.hooksPath is set ({report.core_hooks_path}): git runs hooks from "
            f"{report.hooks_dir}, not from .git/hooks")
    if not os.path.isabs(os.path.expanduser(report.core_hooks_path)):
        out.say("  it is a relative path, so each worktree has its own hooks directory: "
                "run `orc hooks install` in each worktree; the shims name this machine's "
                "Python, so keep them out of commits")


def _python_note(h: HookState) -> str:
    if h.state == "installed" and h.python_found is False:
        return (f"; its Python {h.python} is gone, so it does nothing "
                "(re-run `orc hooks install`)")
    return ""


def cmd_install(args: argparse.Namespace, out: Output) -> int:
    from orc_git.githooks import mergedriver

    report = install(force=args.force)
    driver = mergedriver.install(Path.cwd(), default_python())
    out.mode = _mode()
    _where(report, out)
    for h in report.hooks:
        if h.action != "refused":
            out.say(f"{h.name}: {h.message} ({h.path})")
    out.say(f"state.yaml merges: {driver.message} ({driver.attributes_path})")
    refused = report.refused
    if refused:
        for h in refused:
            out.warn(f"{h.name}: {h.message}")
        out.error("REFUSED", f"not installed: {', '.join(h.name for h in refused)} "
                             "(see above; --force chains them)", _payload(report, driver))
        return EXIT_REFUSED
    out.result({"installed": True, **_payload(report, driver)})
    return 0


def cmd_uninstall(args: argparse.Namespace, out: Output) -> int:
    from orc_git.githooks import mergedriver

    report = uninstall()
    driver = mergedriver.uninstall(Path.cwd())
    out.mode = _mode()
    for h in report.hooks:
        if h.action == "left":
            out.warn(f"{h.name}: {h.message} ({h.path})")
        elif h.action != "absent":
            out.say(f"{h.name}: {h.message} ({h.path})")
    if all(h.action == "absent" for h in report.hooks):
        out.say(f"no orc hooks in {report.hooks_dir}")
    if driver.action != "absent":
        out.say(f"state.yaml merges: {driver.message}")
    out.result({"uninstalled": True, **_payload(report, driver)})
    return 0


def _describe(h: HookState) -> str:
    if h.state == "installed":
        text = f"installed, chains {h.previous.name}" if h.previous else "installed"
        if h.current is False and h.python_found is not False:
            text += " (written by another orc-git or Python: `orc hooks install` refreshes it)"
        return text + _python_note(h)
    if h.state == "foreign":
        text = "foreign hook present (not orc's)"
        if h.previous:
            text += f"; {h.previous.name} is left over from an earlier install"
        return text
    if h.previous:
        return f"missing; {h.previous.name} is left over (`orc hooks uninstall` restores it)"
    return "missing"


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    from orc_git.githooks import mergedriver

    report = status()
    driver = mergedriver.status(Path.cwd(), default_python())
    out.mode = _mode()
    out.line(f"hooks directory: {report.hooks_dir}")
    out.line(f"core.hooksPath: {report.core_hooks_path or 'not set'}")
    width = max(len(h.name) for h in report.hooks)
    for h in report.hooks:
        out.line(f"{h.name:<{width}}  {_describe(h)}")
    out.line(f"merge driver: {_describe_driver(driver)}")
    out.result(_payload(report, driver))
    return 0


def _describe_driver(d: mergedriver.DriverState) -> str:
    if d.installed:
        return "registered for state.yaml" + (
            "" if d.current else " (written by another orc-git or Python: `orc hooks install` "
                                 "refreshes it)")
    if d.command is not None:
        return f"configured, but {d.attributes_path} does not name it (`orc hooks install`)"
    if d.attribute:
        return (f"{d.attributes_path} names it, but this clone has no driver configured "
                "(`orc hooks install`); git merges state.yaml as text meanwhile")
    return "not registered"
    return 0
