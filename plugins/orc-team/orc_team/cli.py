"""``orc team serve|token|activity|who|outbox|sync``: argument parsing, the server's two
commands, and the outbox's two (``activity`` and ``who`` are :mod:`orc_team.views`;
``invite|login|logout|status`` are :mod:`orc_team.cli_auth`, ``dashboard``
:mod:`orc_team.cli_dashboard`).

The orc CLI calls each command as ``func(args, out)`` and maps an OrcError to its exit status
(2 usage, 3 failure); ``python -m orc_team.server`` reuses the same parser and mapping.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from typing import Any

from orc_git.cli.output import Output
from orc_git.errors import OrcError, UsageError

from orc_team import cli_auth, cli_dashboard
from orc_team.protocol import EVENTS_KEPT, MAX_REPLAY
from orc_team.tokens import (
    MAX_LIFETIME,
    ROLES,
    email_problem,
    name_problem,
    user_problem,
)

log = logging.getLogger("orc_team")


def _number(low: float, high: float, kind: type = float) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low:g} to {high:g}")
        return value
    return parse


def _claim(problem: Any) -> Any:
    """An argparse type from one of auth's checks: the CLI refuses (exit 2) exactly what the
    server would refuse in a token."""
    def parse(text: str) -> str:
        why = problem(text)
        if why:
            raise argparse.ArgumentTypeError(why)
        return text
    return parse


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=_number(0, 65535, int), default=8765,
                   help="port to listen on (8765; 0 picks a free one)")
    p.add_argument("--store", default="", metavar="PATH|URL",
                   help="SQLite file keeping locks and fencing counters "
                        "($ORC_HOME/team.sqlite3), or redis://HOST:PORT[/DB] shared by "
                        "several servers")
    p.add_argument("--away-after", type=_number(0.1, 1e7), default=300.0, metavar="S",
                   help="seconds without activity before a user shows as away (300)")
    p.add_argument("--keepalive", type=_number(0, 3600), default=20.0, metavar="S",
                   help="WebSocket ping interval; an unanswered peer is dropped after half "
                        "of it (20; 0 disables)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="a browser origin allowed besides the server's own (repeatable)")
    p.add_argument("--rate", type=_number(0.1, 1e6), default=100.0, metavar="N",
                   help="messages per second a connection may sustain, lock traffic and other "
                        "messages counted apart (100)")
    p.add_argument("--burst", type=_number(1, 1e6), default=200.0, metavar="N",
                   help="messages a connection may send at once (200)")
    p.add_argument("--send-queue", type=_number(1, 1e6, int), default=1024, metavar="N",
                   help="messages queued for a slow client before it is dropped (1024)")
    p.add_argument("--handshake-timeout", type=_number(0, 3600), default=5.0, metavar="S",
                   help="seconds a connection has to send its request's headers; one that "
                        "sends nothing or half a request is closed (5; 0 disables)")
    p.add_argument("--max-per-peer", type=_number(0, 1e7, int), default=256, metavar="N",
                   help="connections open at once from one address, before authentication; "
                        "more are refused with HTTP 429 (256; 0: no cap)")
    p.add_argument("--max-per-user", type=_number(0, 1e7, int), default=64, metavar="N",
                   help="WebSocket connections open at once per user; more are refused with "
                        "HTTP 429 (64; 0: no cap)")
    p.add_argument("--max-token-lifetime", type=_number(1, 10 * 365 * 86400),
                   default=MAX_LIFETIME, metavar="S",
                   help="longest token lifetime accepted, exp minus iat (or minus now) "
                        "(2592000: 30 days)")
    p.add_argument("--events-kept", type=_number(1, 1e9, int), default=EVENTS_KEPT,
                   metavar="N", help="latest events kept per project for replay, at least "
                                     f"({EVENTS_KEPT})")
    p.add_argument("--log-level", default="info",
                   choices=("debug", "info", "warning", "error"),
                   help="the least important log lines written to stderr (default: info)")


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    team = sub.add_parser("team", help="the team server (orc-team plugin)")
    actions = team.add_subparsers(dest="team_command", metavar="ACTION", required=True)
    serve = actions.add_parser("serve", help="run the team server")
    add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)
    token = actions.add_parser("token", help="print a token signed with ORC_TEAM_SECRET")
    token.add_argument("--user", required=True, type=_claim(user_problem), metavar="ID",
                       help="user id: 1-64 letters, digits, '.', '_', '@', '+' or '-'")
    token.add_argument("--name", type=_claim(name_problem), metavar="N",
                       help="display name, 1-100 printable characters (the user id)")
    token.add_argument("--email", type=_claim(email_problem), metavar="E",
                       help="the email address the token carries")
    token.add_argument("--role", choices=ROLES, default="member",
                       help="member, or admin (may force locks) (default: member)")
    token.add_argument("--expires", type=_number(1, MAX_LIFETIME), default=MAX_LIFETIME,
                       metavar="S", help="seconds until the token expires, at most the "
                                         "server's default maximum lifetime (2592000: 30 days)")
    token.set_defaults(func=cmd_token)
    cli_auth.add_parsers(actions, _number, _claim, MAX_LIFETIME)
    cli_dashboard.add_parser(actions, _number, _claim)
    activity = actions.add_parser("activity", help="the team's activity feed, newest last")
    activity.add_argument("--project", type=_claim(project_problem), metavar="P",
                          help="the project (team.project)")
    activity.add_argument("--since", type=_number(0, 2**53 - 1, int), metavar="OFFSET",
                          help="events after this offset (default: the latest)")
    activity.add_argument("--limit", type=_number(1, MAX_REPLAY, int), default=20, metavar="N",
                          help=f"at most N events (20; at most {MAX_REPLAY})")
    activity.add_argument("--follow", action="store_true",
                          help="keep printing new events until Ctrl-C")
    activity.add_argument("--json", action="store_true", help="one JSON object on stdout")
    activity.set_defaults(func=_view("cmd_activity"))
    who = actions.add_parser("who", help="who is connected: status, active task, last seen")
    who.add_argument("--json", action="store_true", help="one JSON object on stdout")
    who.set_defaults(func=_view("cmd_who"))
    add_outbox_parsers(actions)


def add_outbox_parsers(actions: argparse._SubParsersAction[Any]) -> None:
    """``orc team outbox`` and ``orc team sync`` (the team client's outbox)."""
    outbox = actions.add_parser("outbox", help="what is still waiting to reach the team server")
    outbox.add_argument("--limit", type=_number(1, 1e9, int), default=100, metavar="N",
                        help="rows shown of each state, oldest first (100)")
    outbox.add_argument("--json", action="store_true", help="one JSON object on stdout")
    outbox.set_defaults(func=cmd_outbox)
    sync = actions.add_parser("sync", help="deliver the outbox to the team server now")
    sync.add_argument("--timeout", type=_number(0.1, 86400), default=60.0, metavar="S",
                      help="seconds to deliver for at most (60)")
    sync.add_argument("--json", action="store_true", help="one JSON object on stdout")
    sync.add_argument("--background", action="store_true", help=argparse.SUPPRESS)
    sync.set_defaults(func=cmd_sync)


def add_resource_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """``orc resource list|get|put|edit`` (a top-level command: resources are not the
    server's administration, they are the team's documents)."""
    resource = sub.add_parser("resource", help="shared resources on the team server "
                                               "(orc-team plugin)")
    actions = resource.add_subparsers(dest="resource_command", metavar="ACTION",
                                      required=True)
    rid = _claim(resource_problem)
    listing = actions.add_parser("list", help="every resource: id, version, who, when, project")
    listing.add_argument("--json", action="store_true", help="one JSON object on stdout")
    listing.set_defaults(func=_command("cmd_list"))
    get = actions.add_parser("get", help="print a resource's content (the latest version)")
    get.add_argument("resource_id", type=rid, metavar="ID", help="the resource's id")
    get.add_argument("--version", type=_number(1, 2**53 - 1, int), metavar="N",
                     help="this version instead of the latest (every version is kept)")
    get.add_argument("--json", action="store_true", help="one JSON object on stdout")
    get.set_defaults(func=_command("cmd_get"))
    put = actions.add_parser("put", help="save FILE as the version after N (0 creates)")
    put.add_argument("resource_id", type=rid, metavar="ID", help="the resource's id")
    put.add_argument("file", metavar="FILE", help="UTF-8 text, at most 64 KiB ('-': stdin)")
    put.add_argument("--version", type=_number(0, 2**53 - 1, int), metavar="N", required=True,
                     help="the version FILE was made from (0 creates the resource)")
    put.add_argument("--project", type=_claim(project_problem), metavar="P",
                     help="the project told of the change (default: the resource's)")
    put.add_argument("--json", action="store_true", help="one JSON object on stdout")
    put.set_defaults(func=_command("cmd_put"))
    edit = actions.add_parser("edit", help="edit in $VISUAL / $EDITOR and save; a conflict "
                                           "offers diff / theirs / mine / merge")
    edit.add_argument("resource_id", type=rid, metavar="ID", help="the resource's id")
    edit.add_argument("--project", type=_claim(project_problem), metavar="P",
                      help="the project told of the change (default: the resource's)")
    edit.add_argument("--json", action="store_true", help="one JSON object on stdout")
    edit.set_defaults(func=_command("cmd_edit"))


def resource_problem(text: str) -> str | None:
    """The task-id rule, as the server checks a resource id."""
    if project_problem(text) is None:
        return None
    return ("a resource id is 1-100 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit, without '..'")


def _command(name: str) -> Any:
    """A command of :mod:`orc_team.resourcecli`, imported when it runs."""
    def run(args: argparse.Namespace, out: Any) -> int:
        from orc_team import resourcecli

        code: int = getattr(resourcecli, name)(args, out)
        return code
    return run


_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def project_problem(text: str) -> str | None:
    """The server's rule for a project id."""
    if _PROJECT.fullmatch(text) and ".." not in text:
        return None
    return ("a project id is 1-100 letters, digits, '.', '_' or '-', starting with a letter or "
            "digit, without '..'")


def _view(name: str) -> Any:
    """A command of :mod:`orc_team.views`, imported when it runs."""
    def run(args: argparse.Namespace, out: Any) -> int:
        from orc_team import views

        code: int = getattr(views, name)(args, out)
        return code
    return run


def _secret(out: Any) -> str:
    from orc_team.server.config import MIN_SECRET_BYTES, secret_from_env

    secret = secret_from_env()
    if len(secret.encode()) < MIN_SECRET_BYTES:
        out.warn(f"ORC_TEAM_SECRET is shorter than {MIN_SECRET_BYTES} bytes; tokens signed "
                 "with it can be forged by brute force")
    return secret


def cmd_token(args: argparse.Namespace, out: Any) -> int:
    from orc_team.tokens import mint_token

    token = mint_token(_secret(out), args.user, name=args.name, email=args.email,
                       role=args.role, expires_in=args.expires)
    print(token, flush=True)
    return 0


def cmd_outbox(args: argparse.Namespace, out: Any) -> int:
    from orc_git.context import Context

    from orc_team.client.sync import show

    ctx = Context.discover()
    out.mode = ctx.mode
    shown = show(ctx, args.limit)
    for e in shown["events"]:
        error = e.get("error") or {}
        out.row(e["seq"], e["state"], e.get("made_at") or "-", e.get("event_type") or "-",
                e.get("task_id") or "-", e.get("event_id") or "-",
                f"{error.get('code')}: {error.get('message')}" if error else "")
    out.say(f"{shown['pending']} events pending, {shown['rejected']} rejected "
            f"({shown['path']})")
    out.result(shown)
    return 0


def cmd_sync(args: argparse.Namespace, out: Any) -> int:
    from orc_git.context import Context

    from orc_team.client.sync import failure, sync

    ctx = Context.discover()
    out.mode = ctx.mode
    result = sync(ctx, args.timeout, wait_lock=not args.background)
    counts = {"delivered": result.delivered, "rejected": result.rejected,
              "pending": result.pending}
    if result.pending:
        args.failure_fields = counts
        raise failure(result, args.timeout)
    out.say(f"delivered {result.delivered} events; the outbox is empty"
            + (f" ({result.rejected} rejected by the server: `orc team outbox` shows why)"
               if result.rejected else ""))
    out.result(counts)
    return 0


def _configure_logging(level: str) -> None:
    from orc_team.server.logtext import SafeFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("orc_team", "aiohttp"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(level.upper() if name == "orc_team" else logging.WARNING)
        logger.propagate = False


def open_store(where: str, events_kept: int) -> Any:
    """A ``redis://`` URL is the Redis store (several servers may share it), anything else a
    SQLite file (one server)."""
    if where.startswith("redis://"):
        from orc_team.server.redis_store import RedisStore

        return RedisStore(where, events_kept)
    if "://" in where:
        raise UsageError(f"--store {where}: give a SQLite file path or redis://HOST:PORT[/DB]")
    from orc_team.server.sqlite_store import SQLiteStore

    return SQLiteStore(where, events_kept)


def cmd_serve(args: argparse.Namespace, out: Any) -> int:
    from orc_team.server.app import run
    from orc_team.server.config import ServerConfig
    config = ServerConfig(secret=_secret(out), host=args.host, port=args.port, store=args.store,
                          away_after=args.away_after, keepalive=args.keepalive,
                          allowed_origins=frozenset(args.allow_origin), rate=args.rate,
                          burst=args.burst, send_queue=args.send_queue,
                          handshake_timeout=args.handshake_timeout,
                          max_per_peer=args.max_per_peer, max_per_user=args.max_per_user,
                          max_token_lifetime=args.max_token_lifetime,
                          events_kept=args.events_kept)
    _configure_logging(args.log_level)
    store = open_store(config.store, config.events_kept)
    try:
        run(config, store)
    except OSError as exc:
        raise OrcError(f"cannot listen on {config.host}:{config.port}: "
                       f"{exc.strerror or exc}") from None
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m orc_team.server [serve options]``: the server without the orc front end."""
    parser = argparse.ArgumentParser(prog="python -m orc_team.server",
                                     description="Run the orc-team server.")
    add_serve_arguments(parser)
    out = Output(False)
    try:
        args = parser.parse_args(argv)
        cmd_serve(args, out)
        return 0
    except OrcError as exc:
        out.error(exc.code, exc.message)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
