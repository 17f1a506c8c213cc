"""Plugin discovery: the core's own lockers plus every ``orc_git`` entry point, each loaded in
isolation so that a broken plugin is reported and skipped, never fatal."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import entry_points as find_entry_points

import pluggy

from orc_git import __version__
from orc_git.plugin import hookspecs, lockers

log = logging.getLogger("orc_git.plugins")

BUILTIN = "orc_git.lockers"
"""The name the core's own lockers are registered under."""


@dataclass(frozen=True)
class PluginRecord:
    name: str
    distribution: str | None
    version: str | None
    error: str | None = None


@dataclass
class Plugins:
    manager: pluggy.PluginManager
    records: list[PluginRecord]


def load_plugins(entry_points: bool = True) -> Plugins:
    pm = pluggy.PluginManager("orc_git")
    pm.add_hookspecs(hookspecs)
    pm.register(lockers, name=BUILTIN)
    records = [PluginRecord(BUILTIN, "orc-git", __version__)]
    if entry_points:
        for ep in find_entry_points(group="orc_git"):
            dist = ep.dist.name if ep.dist else None
            version = ep.dist.version if ep.dist else None
            try:
                pm.register(ep.load(), name=ep.name)
            except (Exception, SystemExit) as exc:  # a plugin's bug must not take the core down
                error = f"{type(exc).__name__}: {exc}"
                log.warning("plugin %r (%s) failed to load and was skipped: %s", ep.name,
                            dist or "?", error)
                records.append(PluginRecord(ep.name, dist, version, error))
            else:
                records.append(PluginRecord(ep.name, dist, version))
    return Plugins(pm, records)
