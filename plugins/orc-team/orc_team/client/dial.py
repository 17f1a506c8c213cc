"""Opening one WebSocket connection to the team server, and what its failures mean.

The split that matters to team mode: an unreachable server (refused, timed out, reset, a 5xx from
a proxy) is LockerUnavailable, the one error that falls back to the file lease; a server that is
there and refuses this client (401 token, 404 wrong URL, a policy close for an expired token) is a
ConfigError, which no fallback may hide.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import struct
import time
from typing import TYPE_CHECKING
from urllib.parse import quote

from orc_git.errors import ConfigError, LockerUnavailable, OrcError

from orc_team import __version__
from orc_team.client.http import http_failure
from orc_team.client.settings import ClientSettings
from orc_team.protocol import MAX_FRAME_BYTES

if TYPE_CHECKING:
    from websockets.exceptions import ConnectionClosed

    from orc_team.client.link import Link

_WS_LOG = logging.getLogger("orc_team.client.websockets")
POLICY_VIOLATION = 1008


_preferred: dict[tuple[str, ...], str] = {}
"""The instance that last answered, per configured list of several: tried first next time."""


def open_link(settings: ClientSettings, client_id: str) -> Link:
    """Connect as holder ``client_id``; with several URLs (instances sharing one store), to the
    first that can be reached, starting from the one that last answered.  The client instance
    id is the same on every one, so its leases are re-asserted as extensions there."""
    urls = settings.urls
    if len(urls) == 1:
        return _open_one(settings, client_id)
    first = _preferred.get(urls, urls[0])
    failure: LockerUnavailable | None = None
    for url in (first, *(u for u in urls if u != first)):
        try:
            link = _open_one(dataclasses.replace(settings, base_url=url), client_id)
        except LockerUnavailable as exc:
            failure = exc
            continue
        _preferred[urls] = url
        return link
    assert failure is not None
    raise LockerUnavailable(f"none of the team servers ({', '.join(urls)}) can be reached; "
                            f"the last: {failure.message}")


def _open_one(settings: ClientSettings, client_id: str) -> Link:
    """Connect as holder ``client_id`` within ``settings.open_timeout``.  websockets is imported
    here, on first use, so building a locker (every ``orc lock`` command does) stays cheap."""
    from websockets.client import ClientProtocol
    from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
    from websockets.uri import parse_uri

    from orc_team.client.link import Link

    s = settings
    deadline = time.monotonic() + s.open_timeout
    try:
        uri = parse_uri(f"{s.ws_endpoint}?client={quote(client_id, safe=':')}")
    except InvalidURI as exc:
        raise ConfigError(f"team.server_url is not usable: {exc}") from None
    sock: socket.socket | None = None
    link: Link | None = None
    try:
        sock = socket.create_connection((uri.host, uri.port), timeout=s.open_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if uri.secure:
            sock = _tls(sock, uri.host, deadline)
        protocol = ClientProtocol(uri, max_size=MAX_FRAME_BYTES, logger=_WS_LOG)
        link = Link(sock, protocol, s.keepalive)
        link.handshake({"Authorization": f"Bearer {s.token}",
                        "User-Agent": f"orc-team/{__version__}"}, deadline)
        sock.settimeout(None)  # from now on blocking: the link polls with its own timeouts
        # ... but a peer that stops reading must not hold a sender for ever: a send gives up
        # after the request timeout and ends the connection (a half-sent frame cannot be undone).
        wait = max(s.request_timeout, 0.001)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                        struct.pack("ll", int(wait), int(wait % 1 * 1_000_000)))
        return link
    except InvalidStatus as exc:
        _close(sock, link)
        body = bytes(exc.response.body or b"")
        raise http_failure(exc.response.status_code, body, s.base_url, "/api/ws") from None
    except (OSError, InvalidHandshake, EOFError) as exc:
        _close(sock, link)
        why = "timed out" if isinstance(exc, TimeoutError) else (
            getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
        raise LockerUnavailable(f"cannot reach the team server at {s.base_url}: "
                                f"{why}") from None


def _tls(sock: socket.socket, host: str, deadline: float) -> socket.socket:
    import ssl

    sock.settimeout(max(deadline - time.monotonic(), 0.001))  # the TLS handshake too
    return ssl.create_default_context().wrap_socket(sock, server_hostname=host)


def _close(sock: socket.socket | None, link: Link | None) -> None:
    if link is not None:
        link.dispose()
    elif sock is not None:
        sock.close()


def closed_error(exc: ConnectionClosed, base_url: str) -> OrcError:
    """Why a connection ended, as the error its waiting requests get."""
    received = exc.rcvd
    if received is not None and received.code == POLICY_VIOLATION:
        hint = "; get a new token with `orc team token`" if "token" in received.reason else ""
        return ConfigError(f"the team server closed the connection: {received.reason}{hint}")
    detail = f" ({received.code} {received.reason}".rstrip() + ")" if received else ""
    if received is None and exc.sent is not None:  # we ended it: say why (1009: too big)
        detail = f" (closed here: {exc.sent.code} {exc.sent.reason}".rstrip() + ")"
    return LockerUnavailable(f"connection to the team server at {base_url} lost{detail}")
