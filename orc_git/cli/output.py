"""Data on stdout, narration on stderr, one JSON object with ``--json``, colour only on a TTY.

Every line printed here passes :func:`orc_git.text.printable` (one call, one line: a newline in
data is shown as ``\\n``), and JSON passes :func:`orc_git.text.json_safe` when it holds a
surrogate escape; this is where text from files and other people meets the terminal.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from orc_git.locking.info import LockInfo, parse_rfc3339, readable_time, utc_stamp
from orc_git.text import json_safe, printable

SCHEMA = 1


def use_colour(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def paint(text: str, code: str, stream: TextIO) -> str:
    return f"\033[{code}m{text}\033[0m" if use_colour(stream) else text


class Output:
    def __init__(self, as_json: bool) -> None:
        self.json = as_json
        self.mode: str | None = None
        self._progress_shown = False

    def say(self, message: str) -> None:
        """Narration for people: stderr, never in the way of data."""
        if not self.json:
            self.clear_progress()
            print(printable(message), file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        self.clear_progress()
        print(f"{paint('orc:', '33', sys.stderr)} {printable(message)}", file=sys.stderr,
              flush=True)

    def line(self, text: str = "") -> None:
        if not self.json:
            print(printable(text), flush=True)

    def row(self, *cells: object) -> None:
        """A tab-separated data line (``cut -f`` friendly): each cell escaped on its own, so a
        tab or newline inside one never makes a column or a line."""
        if not self.json:
            print("\t".join(printable(str(c)) for c in cells), flush=True)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """Rows of data: on a terminal, aligned columns under a header, for people; otherwise
        tab-separated rows without a header (``cut -f`` friendly, as :meth:`row`).  No rows, no
        header: the caller says "none" on stderr."""
        if self.json or not rows:
            return
        if not sys.stdout.isatty():
            for cells in rows:
                self.row(*cells)
            return
        texts = [[printable(str(c)) for c in cells] for cells in [header, *rows]]
        widths = [max(len(line[i]) for line in texts) for i in range(len(header))]
        for line in texts:
            print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(),
                  flush=True)

    def result(self, payload: dict[str, Any]) -> None:
        if self.json:
            whole = {"schema": SCHEMA, "mode": self.mode, **payload}
            text = json.dumps(whole)
            if "\\ud" in text:  # a surrogate escape: lone ones are not valid UTF-8
                text = json.dumps(json_safe(whole))
            print(text, flush=True)

    def error(self, code: str, message: str, extra: dict[str, Any] | None = None) -> None:
        if self.json:
            self.result({**(extra or {}), "error": {"code": code, "message": message}})
        else:
            self.clear_progress()
            print(f"{paint('orc: error:', '31', sys.stderr)} {printable(message)}",
                  file=sys.stderr, flush=True)

    def progress(self, text: str) -> None:
        if not self.json and sys.stderr.isatty():
            sys.stderr.write(f"\r\033[K{printable(text)}")
            sys.stderr.flush()
            self._progress_shown = True

    def clear_progress(self) -> None:
        if self._progress_shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self._progress_shown = False


def ago(stamp: str | None) -> str:
    t = parse_rfc3339(stamp) if stamp else None
    if t is None:
        return "unknown"
    seconds = int(time.time() - t)
    if seconds < 0:
        return f"{readable_time(stamp)} (in the future by this machine's clock)"
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds >= size or size == 1:
            n = seconds // size
            return f"{n} {unit}{'' if n == 1 else 's'} ago"
    return stamp or ""


def describe(info: LockInfo) -> list[str]:
    """The lines a person reads about a lock: who, since when, last activity, state."""
    if not info.locked:
        return [f"{info.task_id}: not locked"]
    if info.stale_reason == "unreadable":
        return [f"{info.task_id}: stale (unreadable lease: {info.problem})",
                f"  clean it with `orc lock clean` or take it with "
                f"`orc lock acquire {info.task_id}`"]
    state = f"stale ({info.stale_reason})" if info.stale else "locked"
    lines = [f"{info.task_id}: {state}{' (yours)' if info.mine else ''}",
             f"  Locked by: {info.who()}",
             f"  Started: {ago(info.acquired_at)} ({readable_time(info.acquired_at)})",
             f"  Last activity: {ago(info.heartbeat_at)}",
             f"  Token: {info.token}   TTL: {info.ttl} s   "
             f"Expires: {readable_time(info.expires_at)}"]
    if info.stolen_from:
        lines.append(f"  Stolen from: {info.stolen_from}")
    return lines


LIST_HEADER = ("TASK", "STATE", "OWNER", "PID", "TOKEN", "LAST ACTIVITY")


def list_row(info: LockInfo, for_people: bool) -> list[object]:
    """One ``orc lock list`` row.  Its time is the readable form in the terminal's table, the
    JSON form (RFC 3339 UTC) in the tab-separated rows scripts read."""
    beat = readable_time(info.heartbeat_at) if for_people else utc_stamp(info.heartbeat_at)
    return [info.task_id, f"stale:{info.stale_reason}" if info.stale else "held",
            info.owner or "-", info.pid or "-", "-" if info.token is None else info.token,
            beat or "-"]
