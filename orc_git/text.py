"""Text from files, git and other people, made safe to print on a terminal and in JSON.

Lease and state files are written by other people's tools, by hand, or by someone hostile, and
committed state arrives with every pull: a phase carrying ``\\n``, escape sequences or a bidi
override could print fake ``orc:`` lines, colours or reordered text into a teammate's terminal,
and a lone surrogate (``"\\ud800"`` is valid JSON) cannot be encoded at all.  The rule, in one
place: every line orc prints goes through :func:`printable`, which shows each character
:meth:`str.isprintable` rejects as a Python-style escape; JSON output goes through
:func:`json_safe`.  This module imports nothing: the git hooks use it.
"""

from __future__ import annotations

from typing import Any


def _escape(char: str) -> str:
    return ascii(char)[1:-1]  # \n, \t, \x1b, \u202e, \ud800, \U000e0001


def printable(text: str) -> str:
    """``text`` as one terminal line: every character that is not printable shown escaped.

    Not printable (:meth:`str.isprintable`): C0 and C1 controls (newline, tab, carriage return
    and ESC included) and DEL; format characters (the bidi controls U+202A-U+202E,
    U+2066-U+2069, U+200E/U+200F, U+061C, zero-width characters, soft hyphen, BOM); line and
    paragraph separators; spaces other than U+0020; surrogates, private-use and unassigned code
    points.  A backslash is left as it is: text can look like an escape, but never act as one.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def clipped(text: str, limit: int) -> str:
    """``text`` printable and at most ``limit`` characters, a cut shown by a final ``…``: what
    orc writes into leases and state from a configuration, so that it always reads back."""
    text = printable(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def encodable(text: str) -> str:
    """``text`` with every surrogate code point (which UTF-8 cannot encode) written as its
    escape, ``\\ud800``, the form :func:`printable` shows; any other character is kept."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join(_escape(c) if "\ud800" <= c <= "\udfff" else c for c in text)
    return text


def json_safe(value: Any) -> Any:
    """A JSON-able value with every string :func:`encodable`: the JSON orc prints is valid
    UTF-8 with no lone surrogate escape, which strict parsers refuse.  Other characters are
    left to ``json.dumps`` (a control character is a valid ``\\u001b`` escape there)."""
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
