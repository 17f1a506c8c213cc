"""``orc plugins install team``: the team plugin installed into the Python that runs orc.

Why a command and not only ``pip install 'orc-git[team]'``: the extra names the ``orc-team``
distribution, which pip looks up on an index; from a checkout it must come from
``plugins/orc-team`` instead, and a PEP 508 direct reference cannot be relative
(``orc-team @ file:plugins/orc-team`` is refused, an absolute one would bake in the build
machine's path).  This command finds the plugin next to the core when the core runs from a
checkout (editable installs included) and installs it editable, with this interpreter's pip, so
it always lands where ``orc`` looks for it.  Elsewhere it installs ``orc-team`` from the index.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from orc_git.cli.output import Output
from orc_git.errors import OrcError

PLUGINS = {"team": ("orc-team", "orc-team")}
"""Short name -> (distribution on an index, folder under ``plugins/`` in a checkout)."""


def add_parser(plugins: argparse.ArgumentParser) -> None:
    """``install`` under ``orc plugins`` (which, without an action, lists the plugins)."""
    actions = plugins.add_subparsers(dest="plugins_command", metavar="ACTION")
    p = actions.add_parser("install", help="install a plugin into the Python running orc")
    p.add_argument("name", choices=sorted(PLUGINS), help="the plugin: team (orc-team)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the pip command instead of running it")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_install)


def checkout_folder(name: str) -> Path | None:
    """``plugins/<folder>`` of the checkout the running core comes from, if it is one."""
    import orc_git

    folder = Path(orc_git.__file__).resolve().parent.parent / "plugins" / PLUGINS[name][1]
    return folder if (folder / "pyproject.toml").is_file() else None


def pip_command(name: str) -> list[str]:
    folder = checkout_folder(name)
    target = ["-e", str(folder)] if folder is not None else [PLUGINS[name][0]]
    return [sys.executable, "-m", "pip", "install", *target]


def cmd_install(args: argparse.Namespace, out: Output) -> int:
    argv = pip_command(args.name)
    shown = shlex.join(argv)
    if args.dry_run:
        out.line(shown)
        out.result({"command": argv, "ran": False})
        return 0
    out.say(f"+ {shown}")
    try:
        proc = subprocess.run(argv, stdout=sys.stderr if not args.json else subprocess.DEVNULL,
                              stderr=sys.stderr, check=False)
    except OSError as exc:
        raise OrcError(f"cannot run pip: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        raise OrcError(f"pip failed (exit {proc.returncode}) running: {shown}")
    out.say(f"installed the {args.name} plugin; `orc plugins` lists it")
    out.result({"command": argv, "ran": True})
    return 0
