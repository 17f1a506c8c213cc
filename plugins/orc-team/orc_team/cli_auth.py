"""``orc team invite|login|logout|status``: getting a member onto the server, like ``gh auth``.

``invite`` (run where ORC_TEAM_SECRET is set) mints a token and prints the exact ``orc team
login`` line to send; ``login`` checks the URL and the token against the server before storing
anything in ``~/.orc/config.yaml`` (0600); ``status`` says who you are, where, until when, and
whether the server agrees.  A token is printed only by ``invite`` (that is its job), never in a
message or an error.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shlex
import sys
from typing import Any

from orc_git.cli.output import Output
from orc_git.config import Config, load_config
from orc_git.errors import EXIT_REFUSED, ConfigError, InvalidInput, NotARepository, OrcError
from orc_git.repo import find_repo

from orc_team.client import userconfig
from orc_team.client.probe import TIMEOUT, Probe, TokenFacts, probe
from orc_team.client.settings import normalize_url

DEFAULT_URL = "ws://127.0.0.1:8765"
"""Where ``orc team serve`` listens by default."""

MAX_TOKEN_BYTES = 16 << 10


def add_parsers(actions: argparse._SubParsersAction[Any], number: Any, claim: Any,
                lifetime: float) -> None:
    """``number`` and ``claim`` are :mod:`orc_team.cli`'s argparse types (bounds, auth's
    checks), so invite refuses exactly what ``orc team token`` and the server refuse."""
    from orc_team.tokens import ROLES, email_problem, name_problem, user_problem

    p = actions.add_parser("invite", help="make a member's token and the `orc team login` "
                                          "line to send them (needs ORC_TEAM_SECRET)")
    p.add_argument("--user", required=True, type=claim(user_problem), metavar="ID",
                   help="user id: 1-64 letters, digits, '.', '_', '@', '+' or '-'")
    p.add_argument("--name", type=claim(name_problem), metavar="N",
                   help="display name, 1-100 printable characters (the user id)")
    p.add_argument("--email", type=claim(email_problem), metavar="E", help="email address")
    p.add_argument("--role", choices=ROLES, default="member",
                   help="member (default) or admin (may force others' locks)")
    p.add_argument("--expires", type=number(1, lifetime), default=lifetime, metavar="S",
                   help=f"seconds until the token expires (at most and by default {lifetime:g}: "
                        "30 days)")
    p.add_argument("--server-url", metavar="URL",
                   help="the address members reach the server at (team.server_url, else "
                        f"{DEFAULT_URL})")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_invite)

    p = actions.add_parser("login", help="check a token against the server and store it with "
                                         "the URL in ~/.orc/config.yaml")
    p.add_argument("url", metavar="URL", help="the team server, e.g. ws://HOST:8765")
    p.add_argument("--token", metavar="T",
                   help="the token (default: read from stdin, without echo on a terminal)")
    p.add_argument("--timeout", type=number(0.1, 60), default=TIMEOUT, metavar="S",
                   help=f"seconds each request to the server may take ({TIMEOUT:g})")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_login)

    p = actions.add_parser("logout", help="remove the token from ~/.orc/config.yaml")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_logout)

    p = actions.add_parser("status", help="who you are on which server, token expiry, and "
                                          "whether the server is reachable and accepts it")
    p.add_argument("--timeout", type=number(0.1, 60), default=TIMEOUT, metavar="S",
                   help=f"seconds each request to the server may take ({TIMEOUT:g})")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_status)


def _config() -> Config:
    try:
        return load_config(find_repo())
    except NotARepository:
        return load_config(None)


def _url(text: str) -> str:
    try:
        return normalize_url(text)
    except ConfigError as exc:
        raise InvalidInput(exc.message.replace("team.server_url", "the URL")) from None


def cmd_invite(args: argparse.Namespace, out: Output) -> int:
    from orc_team.cli import _secret
    from orc_team.tokens import mint_token

    secret = _secret(out)
    configured = _config().get("team.server_url")
    url = _url(args.server_url or (configured if isinstance(configured, str) else DEFAULT_URL))
    if not args.server_url and not configured:
        out.say(f"(the login line names {url}, where `orc team serve` listens by default; give "
                "--server-url for the address your members reach)")
    token = mint_token(secret, args.user, name=args.name, email=args.email, role=args.role,
                       expires_in=args.expires)
    login = shlex.join(["orc", "team", "login", url, "--token", token])
    facts = TokenFacts.read(token)
    out.say(f"a token for {facts.who()}, {facts.expiry_text()}; send {args.user} this line "
            "(whoever has it can act as them):")
    out.line(login)
    out.result({"user": args.user, "role": args.role, "server_url": url, "token": token,
                "expires_at": facts.expires_at, "login": login})
    return 0


def _read_token(given: str | None) -> str:
    if given is not None:
        token = given
    elif sys.stdin is None:
        token = ""
    elif sys.stdin.isatty():
        token = getpass.getpass("Paste your token (from `orc team invite`): ")
    else:
        token = sys.stdin.read(MAX_TOKEN_BYTES + 1)
    token = token.strip()
    if not token:
        raise InvalidInput("no token: give --token T or pipe it on stdin")
    if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2 or any(c.isspace() for c in token):
        raise InvalidInput("that is not a token (a JWT is three base64 parts joined by dots, as "
                           "`orc team invite` prints it)")
    return token


def cmd_login(args: argparse.Namespace, out: Output) -> int:
    url = _url(args.url)
    token = _read_token(args.token)
    found = probe(url, token, args.timeout)
    if not found.reachable:
        raise OrcError(f"{found.problem}; nothing was stored")
    if not found.token_ok:
        raise ConfigError(f"{found.token_problem}; nothing was stored")
    stored = userconfig.set_team(url, token)
    facts = TokenFacts.read(token)
    out.say(f"logged in to {url} as {facts.who()}; the token {facts.expiry_text()}")
    out.say(f"stored team.server_url and team.token in {stored} (mode 0600)")
    _overridden(out, stored)
    out.result({"logged_in": True, "server_url": url, "config": str(stored),
                **facts.to_json(), "rtt_ms": found.rtt_ms})
    return 0


def _overridden(out: Output, stored: Any) -> None:
    """Say when another layer (the environment, a repository's .orc/local/) wins over what
    was just stored, so the login does not seem to have no effect."""
    config = _config()
    for key in ("team.server_url", "team.token"):
        source = config.sources.get(key)
        if source is not None and source != str(stored):
            out.warn(f"{key} from {source} overrides the one just stored")
    if config.get("mode") is None:
        out.say("repositories that set no `mode:` now resolve to team mode (a team server URL "
                "is configured); `orc init --mode p2p` keeps one in p2p")


def cmd_logout(args: argparse.Namespace, out: Output) -> int:
    removed = userconfig.remove_token()
    where = userconfig.path()
    out.say(f"removed team.token from {where}" if removed else f"no team.token in {where}")
    if os.environ.get("ORC_TEAM_TOKEN"):
        out.warn("ORC_TEAM_TOKEN is still set in this environment and is still used")
    out.result({"logged_out": True, "removed": removed, "config": str(where)})
    return 0


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    config = _config()
    url_text, token = config.get("team.server_url"), config.get("team.token")
    payload: dict[str, Any] = {"logged_in": False, "server_url": None,
                               "server_url_from": config.sources.get("team.server_url"),
                               "token_from": config.sources.get("team.token"),
                               "token": None, "probe": None}
    if not isinstance(url_text, str) or not url_text:
        out.line("not logged in: no team server URL is configured (`orc team login URL`)")
        out.result(payload)
        return EXIT_REFUSED
    url = normalize_url(url_text)
    payload["server_url"] = url
    facts = TokenFacts.read(token) if isinstance(token, str) and token else None
    found = probe(url, token if facts else None, args.timeout)
    payload.update(token=facts.to_json() if facts else None, probe=found.to_json(),
                   logged_in=bool(facts and found.token_ok))
    out.line(f"server: {url} (from {payload['server_url_from']}): {_reach(found)}")
    if facts is None:
        out.line("token: none configured (`orc team login URL` stores one)")
    else:
        out.line(f"user: {facts.who()}, token from {payload['token_from']}, "
                 f"{facts.expiry_text()}")
        out.line(f"token: {_verdict(found)}")
    out.result(payload)
    return 0 if payload["logged_in"] else EXIT_REFUSED


def _reach(found: Probe) -> str:
    if not found.reachable:
        return f"unreachable ({found.problem})"
    return f"reachable, round trip {found.rtt_ms:g} ms"


def _verdict(found: Probe) -> str:
    if found.token_ok:
        return "accepted by the server"
    if found.token_ok is None:
        return "not checked (the server is unreachable)"
    return f"refused: {found.token_problem}"
