"""``orc team dashboard [--open]``: a sign-in link to the team server's dashboard.

It mints a short-lived token: with ORC_TEAM_SECRET (an admin's shell) as ``orc team invite``
does, otherwise by asking the team server for one with the user's own ``team.token``
(``POST /api/session``: the same user and role, ending no later than that token).  It
prints ``http://HOST:PORT/#token=…``: in the fragment, which a browser never sends to the
server, so the token stays out of request lines, access logs and Referer headers.  The page
moves it to sessionStorage and strips it from the address bar.  A browser is opened only with
``--open``.
"""

from __future__ import annotations

import argparse
import os
import webbrowser
from typing import Any
from urllib.parse import quote

from orc_git.cli.output import Output
from orc_git.errors import ConfigError, InvalidInput

DEFAULT_EXPIRES = 8 * 3600
"""A working day: the page is kept open, but a link left in a terminal's scrollback should
not outlive it."""
MAX_EXPIRES = 7 * 86400


def add_parser(actions: argparse._SubParsersAction[Any], number: Any, claim: Any) -> None:
    from orc_team.tokens import email_problem, name_problem, user_problem

    p = actions.add_parser("dashboard", help="print a sign-in link to the live team dashboard")
    p.add_argument("--user", type=claim(user_problem), metavar="ID",
                   help="who signs in (default: the user of your team.token; another user "
                        "needs ORC_TEAM_SECRET)")
    p.add_argument("--name", type=claim(name_problem), metavar="N",
                   help="display name (default: your team.token's, else the user id)")
    p.add_argument("--email", type=claim(email_problem), metavar="E",
                   help="email address (default: your team.token's)")
    p.add_argument("--expires", type=number(60, MAX_EXPIRES), default=DEFAULT_EXPIRES,
                   metavar="S", help=f"seconds the link works for ({DEFAULT_EXPIRES}; at most "
                                     f"{MAX_EXPIRES})")
    p.add_argument("--server-url", metavar="URL",
                   help="the server as your browser reaches it (team.server_url, else "
                        "http://127.0.0.1:8765)")
    p.add_argument("--open", action="store_true", help="open the link in a web browser")
    p.set_defaults(func=cmd_dashboard)


def page_url(server_url: str, token: str) -> str:
    """The dashboard's address for a ``ws[s]://`` base, the token in its fragment."""
    base = server_url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)
    return f"{base}/#token={quote(token, safe='')}"


def cmd_dashboard(args: argparse.Namespace, out: Output) -> int:
    from orc_team.cli import _secret
    from orc_team.cli_auth import DEFAULT_URL, _config, _url
    from orc_team.client.settings import token_claims
    from orc_team.server.config import SECRET_ENV
    from orc_team.tokens import mint_token

    config = _config()
    configured_url = config.get("team.server_url")
    first_url = (configured_url.split(",")[0].strip()
                 if isinstance(configured_url, str) and configured_url.strip() else DEFAULT_URL)
    url = _url(args.server_url or first_url)
    configured_token = config.get("team.token")
    claims = token_claims(configured_token) if isinstance(configured_token, str) else {}
    user = args.user or claims.get("sub")
    if not isinstance(user, str) or not user:
        raise InvalidInput("whose dashboard? give --user ID (no team.token is configured to "
                           "take the user from)")
    same = claims.get("sub") == user
    if not os.environ.get(SECRET_ENV) and same and isinstance(configured_token, str):
        return _link(out, args, url, _asked_for(url, configured_token.strip(), args.expires))

    def claim(key: str, given: str | None) -> str | None:
        value = claims.get(key) if same else None
        return given or (value if isinstance(value, str) else None)

    secret = _secret(out)
    token = mint_token(secret, user, name=claim("name", args.name),
                       email=claim("email", args.email), role="member",
                       expires_in=args.expires)
    return _link(out, args, url, token)


def _asked_for(url: str, token: str, expires_in: int) -> str:
    """A sign-in token from the server, for the user of ``token``."""
    from orc_team.client.http import HttpReader
    from orc_team.client.settings import ClientSettings

    reader = HttpReader(ClientSettings(url, token))
    try:
        answer = reader.post("/api/session", {"expires_in": expires_in})
    finally:
        reader.close()
    minted = answer.get("token")
    if not isinstance(minted, str) or not minted:
        raise ConfigError(f"{url} answered /api/session without a token; is it an orc team "
                          "server of this version?")
    return minted


def _link(out: Output, args: argparse.Namespace, url: str, token: str) -> int:
    from orc_team.client.probe import TokenFacts

    link = page_url(url, token)
    out.say(f"a dashboard link for {TokenFacts.read(token).who()}, "
            f"{TokenFacts.read(token).expiry_text()} (whoever has it can act as them until then):")
    out.line(link)
    if args.open and not webbrowser.open(link):
        out.warn("could not open a web browser; open the link above yourself")
    return 0
