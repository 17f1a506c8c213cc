"""The team server: ``orc team serve`` (or ``python -m orc_team.server``).

The wire format is :mod:`orc_team.protocol`, shared with the client.  Modules, one job each:
``app`` (routes, connection life cycle), ``views`` (the HTTP JSON answers), ``state`` (the
objects one process shares), ``auth`` (tokens, Origin, client id), ``fields`` (validation of a
request's fields), ``dispatch`` (one message, one reply),
``hub`` (connections, subscriptions, fan-out), ``connection`` (bounded send queue), ``locks``,
``presence``, ``events``, ``ratelimit``, ``store`` (interface) and ``sqlite_store``.
"""

from __future__ import annotations

from orc_team.server.config import ServerConfig

__all__ = ["ServerConfig"]
