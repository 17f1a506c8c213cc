"""The team client: team mode's locker and the WebSocket client under it.

The wire format is :mod:`orc_team.protocol`, shared with the server.  Modules, one job each:
``settings`` (``team.*`` config), ``holder`` (client instance ids), ``backoff``, ``replies``
(request/reply correlation), ``link`` (one WebSocket connection over a blocking socket, no
thread of its own), ``dial`` (opening one, and what its failures mean), ``wsclient`` (the sync
client: who reads when, timeouts, keepalive, reconnects), ``http`` (reads over
``GET /api/locks``), ``convert`` (the protocol's lock objects and error codes as orc-git's),
``locker`` (``WebSocketLocker``) and ``team`` (``TeamLocker``: the composite with the
file-lease fallback, re-assertion and split-brain checks).
"""

from __future__ import annotations

from orc_team.client.locker import WebSocketLocker
from orc_team.client.settings import ClientSettings
from orc_team.client.team import TeamLocker, team_locker
from orc_team.client.wsclient import WSClient

__all__ = ["ClientSettings", "TeamLocker", "WSClient", "WebSocketLocker", "team_locker"]
