"""Output bytes to transcript lines: split on ``\\n``, decode leniently, cut long lines.

A command may print anything: invalid UTF-8, no final newline, a 10 MB line, binary.  The
splitter keeps at most :data:`KEEP_BYTES` of an unfinished line, so memory stays bounded whatever
the line's length; that is enough to cut it exactly as decoding the whole line would.
"""

from __future__ import annotations

TRANSCRIPT_CHARS = 500
"""A ``task.transcript`` line's ``content`` is cut to this many characters, then ``...``
(the same constant as the team protocol's ``TRANSCRIPT_CHARS``)."""

ELLIPSIS = "..."

KEEP_BYTES = 4 * (TRANSCRIPT_CHARS + 2)
"""Bytes of a line worth keeping: every character (a replacement character included) takes at
most 4 bytes, so these decode to at least ``TRANSCRIPT_CHARS + 2`` characters, of which all but
the last (perhaps cut mid-sequence) are exactly those of the whole line."""


def transcript_text(raw: bytes, longer: bool = False) -> str:
    """One line's ``content``: ``raw`` (without its ``\\n``; ``longer`` when bytes after it
    were dropped) decoded with ``errors="replace"``, a trailing ``\\r`` (CRLF) removed, cut to
    :data:`TRANSCRIPT_CHARS` characters + ``...``."""
    if longer or len(raw) > KEEP_BYTES:
        return raw[:KEEP_BYTES].decode("utf-8", "replace")[:TRANSCRIPT_CHARS] + ELLIPSIS
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    text = raw.decode("utf-8", "replace")
    if len(text) > TRANSCRIPT_CHARS:
        return text[:TRANSCRIPT_CHARS] + ELLIPSIS
    return text


class LineSplitter:
    """Feed it reads; get back the lines they complete.  ``flush`` at EOF returns the last
    line when it had no newline."""

    __slots__ = ("_head", "_longer", "_pending")

    def __init__(self) -> None:
        self._head = b""  # the unfinished line's first bytes (at most KEEP_BYTES)
        self._longer = False  # bytes of the unfinished line were dropped
        self._pending = False  # an unfinished line exists (it may be empty of kept bytes)

    def feed(self, data: bytes) -> list[str]:
        if not data:
            return []
        parts = data.split(b"\n")
        last = parts.pop()
        lines: list[str] = []
        if parts:
            first = parts[0]
            if self._pending:
                if self._longer or len(self._head) + len(first) > KEEP_BYTES:
                    lines.append(transcript_text(self._head + first[:KEEP_BYTES], True))
                else:
                    lines.append(transcript_text(self._head + first))
                self._head, self._longer = b"", False
            else:
                lines.append(transcript_text(first))
            lines.extend([transcript_text(p) for p in parts[1:]])
            self._pending = False
        if last:
            self._keep(last)
        return lines

    def _keep(self, data: bytes) -> None:
        self._pending = True
        if self._longer:
            return
        room = KEEP_BYTES - len(self._head)
        if len(data) > room:
            self._head += data[:room]
            self._longer = True
        else:
            self._head += data

    def flush(self) -> list[str]:
        if not self._pending:
            return []
        line = transcript_text(self._head, self._longer)
        self._head, self._longer, self._pending = b"", False, False
        return [line]
