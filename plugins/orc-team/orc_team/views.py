"""``orc team activity`` and ``orc team who``: the team's view from the terminal.

Both read over HTTP (``GET /api/events``, ``GET /api/presence``: one request, no presence churn
for others to see).  ``activity --follow`` then subscribes over the WebSocket with ``since`` the
last event it printed, so nothing published between the read and the subscription is missed,
and after a lost connection it reconnects the same way.  A server that is down or does not
answer fails within the request timeout (``team.timeout``), exit 3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from orc_git.cli.output import Output, ago, use_colour
from orc_git.errors import ConfigError, LockerUnavailable, OrcError, UsageError

from orc_team import protocol
from orc_team.client.http import HttpReader
from orc_team.client.settings import ClientSettings, settings_from_config
from orc_team.feed import ansi, event_line, plain, presence_line

Show = Callable[[dict[str, Any]], None]

EXIT_INTERRUPTED = 130


def _settings(out: Output) -> ClientSettings:
    """Team settings from the repository's config when run inside one, else the user's."""
    from orc_git.config import load_config
    from orc_git.context import Context
    from orc_git.errors import NotARepository

    try:
        config = Context.discover().config
    except NotARepository:
        config = load_config(None)
    out.mode = config.resolve_mode()[0]
    return settings_from_config(config)


def cmd_activity(args: argparse.Namespace, out: Output) -> int:
    settings = _settings(out)
    project = args.project or settings.project
    if not project:
        raise UsageError("which project? give --project P or set team.project in the config")
    reader = HttpReader(settings)
    try:
        doc = reader.events(project, args.since, args.limit)
    finally:
        reader.close()
    events = [e for e in doc["events"] if isinstance(e, dict)]
    if out.json and not args.follow:
        out.result({"project": project, "events": events, "epoch": doc.get("epoch"),
                    "last_offset": doc.get("last_offset"), "truncated": doc.get("truncated")})
        return 0
    show = _json_line if out.json else _printer()
    if doc.get("truncated"):
        out.warn(f"events of {project} after offset {args.since} are partly gone: the server "
                 "keeps only the latest ones")
    for event in events:
        show(event)
    if not args.follow:
        if not events and not out.json:
            out.say(f"no events in {project} yet" if args.since is None
                    else f"no events in {project} after offset {args.since}")
        return 0
    offsets = [e["offset"] for e in events if isinstance(e.get("offset"), int)]
    since = offsets[-1] if offsets else doc.get("last_offset")
    try:
        follow(settings, project, since if isinstance(since, int) else 0, doc.get("epoch"),
               show, out)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return 0


def _printer() -> Show:
    paint = ansi if use_colour(sys.stdout) else plain

    def show(event: dict[str, Any]) -> None:
        print(event_line(event, paint), flush=True)
    return show


def _json_line(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


def follow(settings: ClientSettings, project: str, since: int, epoch: object, show: Show,
           out: Output) -> None:
    """Print the project's events after ``since`` as they come, until interrupted; a lost
    connection is reopened (backing off) and resumes from the last event shown."""
    from orc_team.client.dial import closed_error, open_link
    from orc_team.client.holder import safe_host

    client_id = f"{safe_host()}:{os.getpid()}:activity"
    delay, said = settings.backoff_initial, False
    while True:
        try:
            link = open_link(settings, client_id)
        except LockerUnavailable as exc:
            if not said:
                out.warn(f"{exc.message}; retrying (Ctrl-C stops)")
                said = True
            time.sleep(delay)
            delay = min(delay * 2, settings.backoff_cap)
            continue
        if said:
            out.warn("reconnected")
            said = False
        delay = settings.backoff_initial
        try:
            request: dict[str, Any] = {"project_id": project, "since": since}
            if isinstance(epoch, str):
                request["epoch"] = epoch
            link.send_text(protocol.encode(protocol.message(protocol.SUBSCRIBE, "activity",
                                                            request)))
            while link.ended is None:
                due = link.keepalive_due(time.monotonic())
                if due is None:
                    break
                for raw in link.read(min(due, 1.0)):
                    since, epoch = _take(raw, since, epoch, show, out, project)
            if link.ended is not None:
                problem = closed_error(link.ended, settings.base_url)
                if isinstance(problem, ConfigError):
                    raise problem
            out.warn(f"connection to the team server at {settings.base_url} lost; "
                     "reconnecting")
            said = True
        finally:
            link.dispose()


def _take(raw: bytes, since: int, epoch: object, show: Show, out: Output,
          project: str) -> tuple[int, object]:
    """One message of the follow connection: (the last offset shown, the epoch)."""
    try:
        message = json.loads(raw)
    except ValueError:
        return since, epoch
    if not isinstance(message, dict):
        return since, epoch
    kind, data = message.get("type"), message.get("data")
    if not isinstance(data, dict):
        return since, epoch
    if kind == "error" and message.get("id") == "activity":
        raise OrcError(f"the team server refused to follow {project}: "
                       f"{data.get('message', '?')}")
    if kind == "subscribed" and message.get("id") == "activity":
        if data.get("truncated"):
            out.warn(f"some events of {project} were missed: the server no longer has them")
        known, epoch = epoch, data.get("epoch", epoch)
        if isinstance(known, str) and epoch != known:
            return 0, epoch  # another stream (a new store): its offsets start again
        return since, epoch
    if kind == "event" and data.get("project_id") == project:
        offset = data.get("offset")
        if isinstance(offset, int) and offset <= since:
            return since, epoch  # already shown (a reconnect may replay the last one)
        show(data)
        return (offset if isinstance(offset, int) else since), epoch
    return since, epoch


def cmd_who(args: argparse.Namespace, out: Output) -> int:
    reader = HttpReader(_settings(out))
    try:
        users = reader.presence()
    finally:
        reader.close()
    if out.json:
        out.result({"presence": users})
        return 0
    if not users:
        out.say("nobody is connected to the team server")
    paint = ansi if use_colour(sys.stdout) else plain
    for user in users:
        print(presence_line(user, ago, paint), flush=True)
    return 0
