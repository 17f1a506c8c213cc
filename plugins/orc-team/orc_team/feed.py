"""How the team's activity and presence read in a terminal: one line per event or user.

Pure formatting, apart from the clock and the terminal test: ``orc team activity`` and
``orc team who`` (:mod:`orc_team.views`) print what these return.  Every piece of text from the
server (names, task ids, transcript lines) passes :func:`orc_git.text.printable` on its own, so
colour codes added here are the only control characters that reach the terminal.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any

from orc_git.text import clipped, printable

WHO_WIDTH = 18
TRANSCRIPT_WIDTH = 100
"""A transcript line is shown cut to this many characters: the feed is for glancing."""

Paint = Callable[[str, str], str]


def plain(text: str, code: str) -> str:
    return text


def ansi(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m"


def _text(value: object) -> str:
    return printable(value) if isinstance(value, str) else printable(str(value))


def _when(data: Mapping[str, Any], today: datetime.date) -> str:
    """The publisher's time (``made_at``) when it sent one, else the server's, in local time;
    with the date when it is not today."""
    for key in ("made_at", "timestamp"):
        stamp = data.get(key)
        if not isinstance(stamp, str):
            continue
        try:
            moment = datetime.datetime.fromisoformat(stamp.upper().replace("Z", "+00:00"))
        except ValueError:
            continue
        local = moment.astimezone() if moment.tzinfo else moment
        clock = local.strftime("%H:%M:%S")
        return clock if local.date() == today else f"{local:%Y-%m-%d} {clock}"
    return "--:--:--"


def _seconds(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.1f} s"
    return "? s"


def _what(event_type: str, task: str, p: Mapping[str, Any], paint: Paint) -> str:
    """The verb phrase of an event: what happened to which task."""
    if event_type == "task.started":
        return f"started {task}"
    if event_type == "task.completed":
        return paint(f"completed {task}", "32") + f"  (exit 0, {_seconds(p.get('duration_s'))})"
    if event_type == "task.failed":
        how = (f"signal {_text(p['signal'])}" if p.get("signal")
               else f"exit {_text(p.get('exit_code', '?'))}")
        return paint(f"failed {task}", "31") + f"  ({how}, {_seconds(p.get('duration_s'))})"
    if event_type == "task.transcript":
        content = p.get("content")
        line = clipped(content if isinstance(content, str) else "", TRANSCRIPT_WIDTH)
        mark = paint("!", "33") if p.get("role") == "stderr" else "|"
        return f"{task} {mark} {line}"
    if event_type == "task.phase" and isinstance(p.get("phase"), str):
        return f"{task}: phase {_text(p['phase'])}"
    if event_type == "lock.acquired":
        return f"locked {task}"
    if event_type == "lock.released":
        return f"unlocked {task}" + ("  (forced)" if p.get("forced_by") else "")
    if event_type == "lock.expired":
        return paint(f"lock on {task} expired", "33")
    if event_type == "lock.stolen":
        return paint(f"took {task} from {_text(p.get('old_owner') or '?')}", "33")
    if event_type == "resource.updated":
        return (f"saved resource {_text(p.get('resource_id', '?'))} version "
                f"{_text(p.get('version', '?'))}")
    return f"{_text(event_type)} {task}"


def event_line(data: Mapping[str, Any], paint: Paint = plain,
               today: datetime.date | None = None) -> str:
    """``12:01:03  Alice Martinez      started TASK-1  (acme)``."""
    today = today or datetime.date.today()
    who = data.get("user_name") or data.get("user") or "server"
    who_cell = clipped(_text(who), WHO_WIDTH).ljust(WHO_WIDTH)
    payload = data.get("payload")
    what = _what(str(data.get("event_type", "?")), _text(data.get("task_id", "?")),
                 payload if isinstance(payload, dict) else {}, paint)
    project = data.get("project_id")
    where = f"  ({_text(project)})" if project else ""
    return (f"{paint(_when(data, today), '2')}  {paint(who_cell, '1')}  {what}"
            + paint(where, "2"))


def presence_line(p: Mapping[str, Any], ago: Callable[[str | None], str],
                  paint: Paint = plain) -> str:
    """``alice (Alice Martinez)  active  TASK-1  last seen 3 seconds ago``."""
    user, name = _text(p.get("user_id", "?")), p.get("display_name")
    who = f"{user} ({_text(name)})" if name and name != user else user
    status = str(p.get("status", "?"))
    colour = {"active": "32", "online": "36", "away": "33"}.get(status, "2")
    task = p.get("active_task")
    seen = p.get("last_seen")
    return (f"{paint(clipped(who, 40).ljust(40), '1')}  {paint(_text(status).ljust(7), colour)}"
            f"  {_text(task or '-').ljust(20)}  last seen "
            f"{ago(seen if isinstance(seen, str) else None)}")
