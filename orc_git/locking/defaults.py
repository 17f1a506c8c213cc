"""The core's lockers, registered as a plugin so the team plugin can answer for its own mode."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orc_git.hookspecs import hookimpl

if TYPE_CHECKING:
    from orc_git.context import Context
    from orc_git.locking.base import Locker


@hookimpl(trylast=True)
def orc_git_locker(mode: str, context: Context) -> Locker | None:
    if mode == "solo":
        from orc_git.locking.base import NoOpLocker

        return NoOpLocker()
    if mode == "p2p":
        return context.file_locker()
    return None
