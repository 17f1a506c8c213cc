"""The team plugin's ``orc doctor`` checks (team mode only): the server, the token, the outbox.

Each says what to run when it fails.  The token's user, role and expiry are read from its
claims without the secret, for display; whether it is valid is the server's answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orc_git.doctor import Check
from orc_git.errors import ConfigError

from orc_team.client.probe import Probe, TokenFacts, probe
from orc_team.client.settings import normalize_url

if TYPE_CHECKING:
    from orc_git.context import Context

LOGIN = "orc team login URL (with a token from `orc team invite`)"


def checks(ctx: Context) -> list[Check]:
    if ctx.mode != "team":
        return []
    url_text, token = ctx.config.get("team.server_url"), ctx.config.get("team.token")
    token = token.strip() if isinstance(token, str) and token.strip() else None
    found: Probe | None = None
    if not isinstance(url_text, str) or not url_text:
        server = Check("team server", False, "no team server URL is configured", LOGIN)
    else:
        try:
            url = normalize_url(url_text)
        except ConfigError as exc:
            server = Check("team server", False, exc.message, LOGIN)
        else:
            found = probe(url, token)
            server = _server(found, ctx.config.sources.get("team.server_url"))
    return [server, _token(token, found, ctx.config.sources.get("team.token")), _outbox(ctx)]


def _server(found: Probe, source: str | None) -> Check:
    if not found.reachable:
        return Check("team server", False, f"{found.base_url} (from {source}): unreachable: "
                     f"{found.problem}",
                     "start it (`orc team serve`) or fix team.server_url; meanwhile locks fall "
                     "back to the lease files in this clone", found.to_json())
    return Check("team server", True, f"{found.base_url} (from {source}): reachable, round trip "
                 f"{found.rtt_ms:g} ms", data=found.to_json())


def _token(token: str | None, found: Probe | None, source: str | None) -> Check:
    if token is None:
        return Check("team token", False, "no token is configured", LOGIN)
    facts = TokenFacts.read(token)
    detail = f"{facts.who()}, from {source}, {facts.expiry_text()}"
    data = facts.to_json()
    if facts.expired:
        return Check("team token", False, detail, "ask for a new one (`orc team invite`) and "
                     "run `orc team login URL`", data)
    if found is None or found.token_ok is None:
        return Check("team token", True, detail + "; not checked: the server is unreachable",
                     data=data)
    if not found.token_ok:
        return Check("team token", False, f"{detail}; refused: {found.token_problem}",
                     "ask for a new one (`orc team invite`) and run `orc team login URL`", data)
    return Check("team token", True, detail + "; accepted by the server", data=data)


def _outbox(ctx: Context) -> Check:
    from orc_team.client.outbox import Outbox, exists

    if not exists(ctx.repo.local_dir):
        return Check("team outbox", True, "empty (no run has published from this clone yet)",
                     data={"pending": 0, "rejected": 0})
    box = Outbox(ctx.repo.local_dir)
    try:
        counts = box.counts()
    finally:
        box.close()
    detail = f"{counts['pending']} event(s) waiting, {counts['rejected']} rejected ({box.path})"
    if counts["rejected"]:
        return Check("team outbox", False, detail, "`orc team outbox` shows why the server "
                     "refused them", counts)
    if counts["pending"]:
        detail += "; they are delivered in the background (`orc team sync` now)"
    return Check("team outbox", True, detail, data=counts)
