"""The objects one server process shares, and the app key they hang on.

Apart from :mod:`~orc_team.server.app` so the HTTP views (:mod:`~orc_team.server.views`) and
the admission check (:mod:`~orc_team.server.auth`) can reach them without importing the app.
"""

from __future__ import annotations

import collections
import logging

from aiohttp import web

from orc_team.server.config import ServerConfig
from orc_team.server.dispatch import Dispatcher
from orc_team.server.events import EventBus
from orc_team.server.hub import Hub
from orc_team.server.locks import LockService
from orc_team.server.logtext import Throttle
from orc_team.server.presence import Presence
from orc_team.server.store import Store

log = logging.getLogger("orc_team.server")


class Server:
    """The objects one server process shares between its connections."""

    def __init__(self, config: ServerConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self.hub = Hub(config.max_subscriptions)
        self.events = EventBus(self.hub, store)
        self.locks = LockService(store, self.events, self.hub)
        self.presence = Presence(self.hub, config.away_after)
        self.dispatcher = Dispatcher(config, store, self.hub, self.events, self.locks,
                                     self.presence)
        self.resources = self.dispatcher.resources
        self.notices = Throttle(log)
        self.per_user: collections.Counter[str] = collections.Counter()


SERVER = web.AppKey("server", Server)

__all__ = ["SERVER", "Server"]
