"""``orc plugins install team``: the team plugin installed into the Python that runs orc.

Why a command and not only ``pip install 'orc-git[team]'``: the extra names the ``orc-team``
distribution, which pip looks up on an index; from a checkout it must come from
``plugins/orc-team`` instead, and a PEP 508 direct reference cannot be relative
(``orc-team @ file:plugins/orc-team`` is refused, an absolute one would bake in the build
machine's path).  This command finds the plugin next to the core when the core runs from a
checkout (an editable install, or ``pip install DIR``: pip records DIR) and installs it the same
way, with this interpreter's pip, so it lands where ``orc`` looks for it.  Elsewhere it installs
``orc-team`` from the index.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def _installed_from() -> tuple[Path, bool] | None:
    """The directory orc-git was pip-installed from, and whether editably: pip records it in
    the distribution's ``direct_url.json`` (PEP 610) for ``pip install [-e] DIR``."""
    from importlib.metadata import PackageNotFoundError, distribution
    from urllib.parse import unquote, urlsplit

    try:
        text = distribution("orc-git").read_text("direct_url.json")
        doc: Any = json.loads(text) if text else None
    except (PackageNotFoundError, ValueError, OSError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("url"), str):
        return None
    url = urlsplit(doc["url"])
    if url.scheme != "file":
        return None
    info = doc.get("dir_info")
    return Path(unquote(url.path)), isinstance(info, dict) and info.get("editable") is True


def checkout_folder(name: str) -> tuple[Path, bool] | None:
    """``plugins/<folder>`` of the checkout the running core comes from, if it is one, and
    whether to install it editable (as the core is)."""
    import orc_git

    sub = Path("plugins") / PLUGINS[name][1]
    here = Path(orc_git.__file__).resolve().parent.parent  # editable install, PYTHONPATH
    if (here / sub / "pyproject.toml").is_file():
        return here / sub, True
    source = _installed_from()  # `pip install DIR` copied the core into site-packages
    if source is not None and (source[0] / sub / "pyproject.toml").is_file():
        return source[0] / sub, source[1]
    return None


def pip_command(name: str) -> list[str]:
    found = checkout_folder(name)
    if found is None:
        target = [PLUGINS[name][0]]
    else:
        target = ["-e", str(found[0])] if found[1] else [str(found[0])]
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
