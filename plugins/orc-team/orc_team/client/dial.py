"""Opening one WebSocket connection to the team server, and what its failures mean.

The split that matters to team mode: an unreachable server (refused, timed out, reset, a 5xx from
a proxy) is LockerUnavailable, the one error that falls back to the file lease; a server that is
there and refuses this client (401 token, 404 wrong URL, a policy close for an expired token) is a
ConfigError, which no fallback may hide.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import quote

from orc_git.errors import ConfigError, LockerUnavailable, OrcError

from orc_team import __version__
from orc_team.client.http import http_failure
from orc_team.client.settings import ClientSettings

if TYPE_CHECKING:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import ClientConnection

_WS_LOG = logging.getLogger("orc_team.client.websockets")
POLICY_VIOLATION = 1008
MAX_MESSAGE = 2 * 1024 * 1024


def open_connection(settings: ClientSettings, client_id: str) -> ClientConnection:
    """Connect as holder ``client_id`` within ``settings.open_timeout``.  websockets is imported
    here, on first use, so building a locker (every ``orc lock`` command does) stays cheap."""
    from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
    from websockets.sync.client import connect

    s = settings
    url = f"{s.ws_endpoint}?client={quote(client_id, safe=':')}"
    try:
        return connect(url, additional_headers={"Authorization": f"Bearer {s.token}"},
                       open_timeout=s.open_timeout, ping_interval=s.keepalive,
                       ping_timeout=s.keepalive, close_timeout=0.5, compression=None,
                       proxy=None, max_size=MAX_MESSAGE, logger=_WS_LOG,
                       user_agent_header=f"orc-team/{__version__}", legacy=True)
    except InvalidStatus as exc:
        body = bytes(exc.response.body or b"")
        raise http_failure(exc.response.status_code, body, s.base_url, "/api/ws") from None
    except InvalidURI as exc:
        raise ConfigError(f"team.server_url is not usable: {exc}") from None
    except (OSError, InvalidHandshake, EOFError) as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (
            getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
        raise LockerUnavailable(f"cannot reach the team server at {s.base_url}: "
                                f"{why}") from None


def closed_error(exc: ConnectionClosed, base_url: str) -> OrcError:
    """Why a connection ended, as the error its waiting requests get."""
    received = exc.rcvd
    if received is not None and received.code == POLICY_VIOLATION:
        hint = "; get a new token with `orc team token`" if "token" in received.reason else ""
        return ConfigError(f"the team server closed the connection: {received.reason}{hint}")
    detail = f" ({received.code} {received.reason})".rstrip() if received else ""
    return LockerUnavailable(f"connection to the team server at {base_url} lost{detail}")
