"""Text for the conflict dialog: a three-way merge by ``git merge-file``, its conflict markers,
and a unified diff for a terminal.

``git merge-file`` rather than a Python library: git is always there (orc-git needs it), and
its merge is the one every user of this tool already knows, markers included.
"""

from __future__ import annotations

import difflib
import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from orc_git.errors import GitFailed
from orc_git.text import printable

MARKERS = re.compile(r"^(?:<{7}|>{7})(?: |$)|^={7}$", re.M)
"""The lines ``git merge-file`` leaves around a conflict."""


def has_markers(text: str) -> bool:
    return MARKERS.search(text) is not None


def three_way(base: str, mine: str, theirs: str, theirs_label: str = "theirs"
              ) -> tuple[str, int]:
    """Merge the changes from ``base`` to ``mine`` and to ``theirs``: the result, and how many
    conflicts it holds (each between markers: ``<<<<<<< mine``, ``=======``,
    ``>>>>>>> theirs_label``)."""
    with tempfile.TemporaryDirectory(prefix="orc-merge-") as tmp:
        paths = []
        for name, text in (("mine", mine), ("base", base), ("theirs", theirs)):
            path = Path(tmp) / name
            path.write_bytes(text.encode())
            paths.append(str(path))
        try:
            proc = subprocess.run(["git", "merge-file", "-p", "-L", "mine", "-L", "base",
                                   "-L", theirs_label, *paths], capture_output=True)
        except OSError as exc:
            raise GitFailed(f"cannot run git merge-file: {exc.strerror or exc}") from None
    if not 0 <= proc.returncode < 128:
        why = proc.stderr.decode(errors="replace").strip() or f"status {proc.returncode}"
        raise GitFailed(f"git merge-file could not merge: {why}")
    return proc.stdout.decode(errors="replace"), proc.returncode


def diff_lines(theirs: str, mine: str, theirs_label: str,
               paint: Callable[[str, str], str]) -> list[str]:
    """A unified diff from theirs to mine, one printable line each (text from others never
    reaches the terminal raw), coloured through ``paint``."""
    out: list[str] = []
    for line in difflib.unified_diff(theirs.splitlines(), mine.splitlines(),
                                     fromfile=theirs_label, tofile="mine", lineterm=""):
        shown = printable(line)
        if line.startswith(("---", "+++")):
            out.append(paint(shown, "1"))
        elif line.startswith("@@"):
            out.append(paint(shown, "36"))
        elif line.startswith("+"):
            out.append(paint(shown, "32"))
        elif line.startswith("-"):
            out.append(paint(shown, "31"))
        else:
            out.append(shown)
    return out
