"""Text from lease and state files, made safe to print on a terminal.

Those files are written by other people's tools, by hand, or by someone hostile: a display name
carrying escape sequences could rewrite the user's screen or retitle the terminal.  Control
characters are shown as ``\\xNN`` instead; JSON output needs nothing, ``json.dumps`` escapes them.
"""

from __future__ import annotations

_TABLE: dict[int, str] = {}


def printable(text: str) -> str:
    """``text`` with every control character but newline and tab shown as ``\\xNN``."""
    if text.isprintable():
        return text
    if not _TABLE:
        _TABLE.update({c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7f, 0xa0)]})
        del _TABLE[ord("\n")], _TABLE[ord("\t")]
    return text.translate(_TABLE)
