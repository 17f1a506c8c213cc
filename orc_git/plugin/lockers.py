"""The core's own locker, registered as a plugin (``orc_git.lockers``, tried last) so that
another plugin can answer for p2p, or for a mode of its own, as the team plugin does."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orc_git.plugin.hookspecs import LockerContext, hookimpl

if TYPE_CHECKING:
    from orc_git.locking.base import Locker


@hookimpl(trylast=True)
def orc_git_locker(mode: str, context: LockerContext) -> Locker | None:
    return context.file_locker() if mode == "p2p" else None
