"""``orc completion bash|zsh|fish``: shell completion generated from the argparse parser.

argcomplete, not shtab: shtab writes a static script for bash, zsh and tcsh but not fish;
argcomplete's scripts (bash, zsh, fish) ask ``orc`` itself at each TAB, so the answer always
matches the installed version and includes plugin commands (``orc team …``) whenever the plugin
is installed, with nothing to regenerate.  The price is a Python start per TAB; it is paid only
when ``_ARGCOMPLETE`` is set: argcomplete is imported on that path alone, never by a plain run.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from orc_git.cli.output import Output

SHELLS = ("bash", "zsh", "fish")
INSTALL = {
    "bash": "orc completion bash > ~/.local/share/bash-completion/completions/orc",
    "zsh": "orc completion zsh > \"${fpath[1]}/_orc\"   (or: eval \"$(orc completion zsh)\" "
           "in ~/.zshrc)",
    "fish": "orc completion fish > ~/.config/fish/completions/orc.fish",
}


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    lines = "\n".join(f"  {shell}: {how}" for shell, how in INSTALL.items())
    p = sub.add_parser("completion", help="print a shell completion script (bash, zsh, fish)",
                       description="Print the completion script for SHELL on stdout.",
                       epilog=f"install it with one command:\n{lines}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shell", metavar="SHELL", choices=SHELLS, help="bash, zsh or fish")
    p.set_defaults(func=cmd_completion)


def cmd_completion(args: argparse.Namespace, out: Output) -> int:
    from argcomplete.shell_integration import shellcode

    sys.stdout.write(shellcode(["orc"], shell=args.shell))
    sys.stdout.flush()
    if sys.stdout.isatty():  # shown the script rather than saving it: say how
        out.say(f"install it with: {INSTALL[args.shell]}")
    return 0


def complete(parser: argparse.ArgumentParser) -> None:
    """Answer a completion request (``_ARGCOMPLETE`` set by the shell script) and exit."""
    from argcomplete import autocomplete

    autocomplete(parser)
