"""``orc team sync`` (deliver the outbox now, oldest first) and ``orc team outbox`` (show it)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from orc_git.errors import LockerUnavailable

from orc_team.client import outbox as outbox_file
from orc_team.client.outbox import Outbox
from orc_team.client.sender import Connections, Drained, Drainer

if TYPE_CHECKING:
    from orc_git.context import Context

SYNC_RETRIES = 3
"""Failed tries in a row (backing off 0.1, 0.2, 0.4 s) before ``orc team sync`` gives up."""


def show(ctx: Context, limit: int) -> dict[str, Any]:
    """What ``orc team outbox`` prints: counts, and the oldest ``limit`` rows of each state."""
    local = ctx.repo.local_dir
    if not outbox_file.exists(local):
        return {"pending": 0, "rejected": 0, "events": [],
                "path": str(local / outbox_file.FILE_NAME)}
    box = Outbox(local)
    try:
        return {**box.counts(), "events": box.listing(limit), "path": str(box.path)}
    finally:
        box.close()


def sync(ctx: Context, timeout: float, *, wait_lock: bool = True) -> Drained:
    """Deliver everything now, oldest first, within ``timeout`` (``wait_lock``: waiting for
    another process's drain to end first); the caller says what was left."""
    from orc_team.client.settings import settings_from_config

    settings = settings_from_config(ctx.config)
    local = ctx.repo.local_dir
    if not outbox_file.exists(local):
        return Drained()
    box = Outbox(local)
    connections = Connections(settings)
    end = time.monotonic() + timeout
    try:
        return Drainer(box, connections).drain(lambda: end, wait_lock=wait_lock,
                                               retries=SYNC_RETRIES)
    finally:
        connections.close()
        box.close()


def failure(result: Drained, timeout: float) -> LockerUnavailable:
    """Why ``orc team sync`` left events behind, as its exit-3 error."""
    left = f"{result.pending} events stay in the outbox"
    if result.busy:
        return LockerUnavailable(f"another orc process kept delivering the outbox for "
                                 f"{timeout:g} s; {left}")
    if result.error is not None:
        return LockerUnavailable(f"{result.error.message}; {left} (run `orc team sync` again "
                                 "once the server is reachable)")
    return LockerUnavailable(f"not everything was delivered within {timeout:g} s; {left}")
