"""Everything a command needs about one repository, resolved lazily and at most once.

Solo mode touches nothing but the config files: no plugin discovery, no psutil, no lock files.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

from orc_git.config import Config, load_config
from orc_git.errors import PluginMissing
from orc_git.repo import RepoPaths, find_repo

if TYPE_CHECKING:
    from orc_git.handover import Handover
    from orc_git.identity import Holder, Identity
    from orc_git.locking.base import Locker
    from orc_git.locking.filelocker import FileLocker
    from orc_git.locking.filestore import FileLockStore
    from orc_git.locking.info import LockInfo
    from orc_git.plugin.hookspecs import LockerContext
    from orc_git.plugin.manager import Plugins


TEAM_INSTALL_COMMAND = "orc plugins install team"
"""The one command that installs the team plugin into the Python running orc
(:mod:`orc_git.cli.plugininstall`); every message about the missing plugin names it."""

TEAM_INSTALL_HINT = (
    "team mode needs the orc-team plugin, which is not installed: install it with "
    f"`{TEAM_INSTALL_COMMAND}`, or switch mode with `orc init --mode p2p` or ORC_MODE=p2p"
)


class Context:
    def __init__(self, repo: RepoPaths, config: Config) -> None:
        self.repo = repo
        self.config = config
        self.mode, self.mode_reason = config.resolve_mode()
        self._locker: Locker | None = None

    @classmethod
    def discover(cls, path: str | os.PathLike[str] | None = None) -> Context:
        repo = find_repo(path)
        return cls(repo, load_config(repo))

    @functools.cached_property
    def plugins(self) -> Plugins:
        from orc_git.plugin.manager import load_plugins

        return load_plugins()

    @functools.cached_property
    def identity(self) -> Identity:
        from orc_git.identity import identity_from

        return identity_from(self.config)

    def holder(self, pid: int | None = None) -> Holder:
        from orc_git.identity import Holder

        return Holder.for_process(self.identity, pid)

    @functools.cached_property
    def ttl(self) -> int:
        return self.config.ttl

    @functools.cached_property
    def _heartbeat(self) -> float:
        return self.config.heartbeat

    def heartbeat_interval(self, ttl: int) -> float:
        """The configured interval, never more than a third of the TTL."""
        return min(self._heartbeat, ttl / 3)

    @functools.cached_property
    def _lock_event_hook(self) -> Any:
        return self.plugins.manager.hook.orc_git_lock_event

    def emit(self, kind: str, task_id: str, lock: LockInfo | None,
             previous: LockInfo | None = None, mode: str | None = None) -> None:
        """Tell ``orc_git_lock_event`` plugins; the event is only built when someone listens."""
        if self.mode == "solo":
            return
        hook = self._lock_event_hook
        if not hook.get_hookimpls():
            return
        from orc_git.locking.info import LockEvent

        event = LockEvent(kind, task_id, lock, previous, mode or self.mode)
        try:
            hook(event=event)
        except Exception as exc:  # observers must not break locking
            import logging

            logging.getLogger("orc_git").warning(
                "a plugin failed handling the %s event of %s: %s", event.kind, event.task_id, exc)

    def plugin_report(self, hook: str) -> list[str]:
        """Lines plugins add to a git hook's report; a failing plugin costs its lines only."""
        from orc_git.plugin.index import implemented_hooks

        if "orc_git_hook_report" not in implemented_hooks():
            return []
        try:
            results = self.plugins.manager.hook.orc_git_hook_report(hook=hook, context=self)
        except Exception as exc:
            return [f"a plugin failed adding to the {hook} report: {exc}"]
        return [str(line) for result in results if result for line in result]

    @functools.cached_property
    def handover(self) -> Handover:
        """This worktree's ``HEAD``, which releases record and acquires compare with."""
        from orc_git.handover import Handover

        return Handover(self.repo)

    def lock_store(self) -> FileLockStore:
        """This clone's file leases to read and clean, without the locker that grants them: the
        git hooks' report lists stale leases through it and never imports the locker."""
        from orc_git.locking.filestore import FileLockStore

        return FileLockStore(self.repo.lock_root, self.holder(), ttl=self.ttl,
                             events=self.emit, mode=self.mode, domain_dir=self.repo.local_dir,
                             handover=self.handover)

    def file_locker(self, pid: int | None = None) -> FileLocker:
        from orc_git.locking.filelocker import FileLocker

        return FileLocker(self.repo.lock_root, self.holder(pid), ttl=self.ttl,
                          events=self.emit, mode=self.mode, user_owns=pid is not None,
                          domain_dir=self.repo.local_dir, handover=self.handover)

    def locker(self, pid: int | None = None) -> Locker:
        """The mode's locker; ``pid`` names the holding process when it is not this one.
        Solo mode and p2p's locker for another process are built here, without loading any
        plugin; everything else comes from the ``orc_git_locker`` hook."""
        if pid is None and self._locker is not None:
            return self._locker
        if self.mode == "solo":
            from orc_git.locking.base import NoOpLocker

            locker: Locker = NoOpLocker()
        elif pid is not None and self.mode == "p2p":
            locker = self.file_locker(pid)
        else:
            from orc_git.locking.base import PerProcessLocker

            locker = self._plugin_locker()
            if pid is not None and isinstance(locker, PerProcessLocker):
                locker = locker.for_pid(pid)
        if pid is None:
            self._locker = locker
        return locker

    def _plugin_locker(self) -> Locker:
        context: LockerContext = self  # what the hook declares a factory receives
        result: Locker | None = self.plugins.manager.hook.orc_git_locker(mode=self.mode,
                                                                         context=context)
        if result is None:
            if self.mode == "team":
                raise PluginMissing(TEAM_INSTALL_HINT)
            raise PluginMissing(f"no installed plugin provides a locker for {self.mode!r}")
        return result


_cache: dict[tuple[str, str, str, int], Context] = {}


def default_context(path: str | os.PathLike[str] | None = None) -> Context:
    """A context per repository and environment, reused by :func:`orc_git.hold` across calls."""
    where = os.fspath(path) if path is not None else os.getcwd()
    # The pid is part of the key: a forked child is another holder and needs its own locker.
    key = (where, os.environ.get("ORC_MODE", ""), os.environ.get("ORC_HOME", ""), os.getpid())
    ctx = _cache.get(key)
    if ctx is None:
        ctx = _cache[key] = Context.discover(where)
    return ctx
