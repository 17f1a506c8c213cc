"""The client instance id: who holds a lock on the team server, besides the token's user.

One id per *holder process*, ``HOST:PID:START``, where START is the process's start time in clock
ticks since boot (``/proc/PID/stat``; psutil's start time elsewhere).  Derived, not stored: the
same process always gets the same id, so ``orc lock acquire`` and a later ``orc lock heartbeat`` or
``release`` run from the same shell (both speak for their parent process) are one holder, while
another process, a reused PID, or the same user's other machine is another holder (which the
server refuses; only the CLI lets the same user on the same host act for a holder, as file
leases allow).  Ticks rather than a wall-clock start time: the latter is computed from the boot
time, which moves when the clock is adjusted, and the id must be exactly equal every time.
"""

from __future__ import annotations

import functools
import os
import re

from orc_git.identity import hostname

_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


@functools.cache
def safe_host() -> str:
    """The host name in the characters a client id allows (no ``:``), at most 63 of them."""
    return (_UNSAFE.sub("-", hostname()).strip(".-") or "host")[:63]


def process_tag(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return stat[stat.rindex(b")") + 2:].split()[19].decode()
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return str(int(psutil.Process(pid).create_time() * 100))
    except Exception:  # gone or not inspectable: the PID alone still tells holders apart
        return "0"


def client_id(pid: int | None = None) -> str:
    """The instance id of process ``pid`` (default: this one)."""
    pid = os.getpid() if pid is None else pid
    return f"{safe_host()}:{pid}:{process_tag(pid)}"


SELF_HELD = ".self"
"""Marks the id of a process that holds its leases itself (``orc lock run``, ``orc run``,
``hold()``), as opposed to ``orc lock acquire`` holding for its parent shell: the same user's
other shells may release the latter, the former only with ``--force`` while it lives."""


def self_holder_id() -> str:
    """The instance id of this process as a holder of its own leases."""
    return client_id() + SELF_HELD


def holds_itself(client: str) -> bool:
    return client.endswith(SELF_HELD)


def parse_client_id(client: str | None) -> tuple[str | None, int | None]:
    """``(host, pid)`` from an id made by :func:`client_id`; ``(None, None)`` for other ids
    (browsers, other tools)."""
    parts = (client or "").split(":")
    if len(parts) != 3 or not parts[1].isdigit():
        return None, None
    return parts[0], int(parts[1])
