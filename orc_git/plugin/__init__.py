"""The plugin system: what plugins may implement (:mod:`~orc_git.plugin.hookspecs`), how they are
found and loaded (:mod:`~orc_git.plugin.manager`), which hooks they implement, remembered so git
hooks skip loading them (:mod:`~orc_git.plugin.index`), and the core's own lockers, registered as
a plugin like any other (:mod:`~orc_git.plugin.lockers`).  Plugins import their marker as
``orc_git.hookimpl``."""
