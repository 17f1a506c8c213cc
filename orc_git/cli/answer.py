"""Where a lock command's answer came from, said the same way by every command.

A read in team mode may come from the team server or, when it cannot be reached, from this
clone's file leases only, which cannot show a lock held on the server.  Such an answer must never
pass for a whole one: every lock command adds ``"source"`` and ``"warnings"`` to its JSON, prints
the warnings on stderr (with or without ``--json``) and, where it prints a lock, names the source.
The locker says which it was (:func:`orc_git.locking.base.answer_of`); nothing here knows lockers.
"""

from __future__ import annotations

from typing import Any

from orc_git.cli.output import Output
from orc_git.locking.base import Locker, answer_of

SOURCE_TEXT = {"team": "the team server",
               "file-fallback": "this clone's file leases only (the team server is unreachable)"}


def answered(out: Output, locker: Locker, *, warn: bool = True) -> dict[str, Any]:
    """The JSON fields of ``locker``'s last answer; its warnings go to stderr unless ``warn`` is
    False (the locker already logged them)."""
    answer = answer_of(locker)
    if warn:
        for text in answer.warnings:
            out.warn(text)
    return {"source": answer.source, "warnings": list(answer.warnings)}


def source_line(locker: Locker) -> str | None:
    """The line a person reads under a lock about where it was seen; None for p2p and solo,
    where the clone's own files are the whole answer."""
    text = SOURCE_TEXT.get(answer_of(locker).source)
    return f"  Source: {text}" if text else None


def fallback_note(locker: Locker) -> str:
    """A suffix for one-line narration (waiting, granted) when the answer is the fallback's."""
    return " [file leases only: the team server is unreachable]" if (
        answer_of(locker).source == "file-fallback") else ""


def granted_how(locker: Locker) -> str:
    """What a grant's narration adds when only the file lease granted it."""
    return " by file lease only" if fallback_note(locker) else ""
