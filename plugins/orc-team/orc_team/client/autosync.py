"""The delivery a team-mode command leaves behind when it has connected to the server.

Any command whose team locker connects (``orc lock acquire``, ``orc run``…) arranges, once, a
check at its exit: when the outbox still has pending events, it starts ``orc team sync
--background`` as a detached process and exits at once.  A short command so pays a file check,
an outbox count and, only with a backlog, one process spawn; never a wait on the network.  The
detached sync delivers within its own bounded time.  ``ORC_TEAM_AUTOSYNC=0`` turns this off.

Imported by every team-mode locker: nothing heavy (SQLite) at the top.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orc_git.plugin.hookspecs import LockerContext

    from orc_team.client.wsclient import WSClient

BACKGROUND_TIMEOUT = 120.0
OUTBOX_FILE = "outbox.sqlite3"
_armed: set[str] = set()


def deliver_after(ctx: LockerContext, client: WSClient) -> None:
    """Have ``client``'s first connection arrange a background sync at this process's exit."""
    if os.environ.get("ORC_TEAM_AUTOSYNC", "1") == "0":
        return
    local, worktree = ctx.repo.local_dir, ctx.repo.worktree

    def connected() -> None:
        key = str(local)
        if key not in _armed:
            _armed.add(key)
            atexit.register(_sync_in_background, local, worktree)
    client.on_connect(connected)


def armed(local: Path) -> bool:
    """Will this process leave a background sync for ``local``'s outbox at exit?"""
    return str(local) in _armed


def _sync_in_background(local: Path, worktree: Path) -> None:
    if not (local / OUTBOX_FILE).exists():
        return
    from orc_team.client.outbox import Outbox

    try:
        box = Outbox(local)
        try:
            pending = box.waiting(1)
        finally:
            box.close()
    except Exception:  # an exit must not fail over this; the next command tries again
        return
    if pending:
        spawn_sync(worktree)


def spawn_sync(worktree: Path) -> None:
    """``orc team sync --background``, detached: it outlives this process, says nothing."""
    with contextlib.suppress(OSError):
        subprocess.Popen([sys.executable, "-m", "orc_git", "team", "sync", "--background",
                          "--timeout", str(BACKGROUND_TIMEOUT)], cwd=worktree,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
