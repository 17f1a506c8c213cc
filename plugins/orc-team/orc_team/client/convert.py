"""The server's lock objects as orc-git's LockInfo, and its error codes as orc-git's errors.

Kept apart from the locker so the mapping (what a user and ``--json`` see in team mode) is in one
place.  ``owner`` follows the file lease's ``user@host`` form when the holder's client id says the
host (ids made by :mod:`orc_team.client.holder`); ``token`` is the server's fencing token, counted
in ``lock_domain``, the server's store (None from a server that predates lock domains).
"""

from __future__ import annotations

from typing import Any

from orc_git.errors import NotOwner, OrcError, Refused
from orc_git.handover import head_from
from orc_git.locking.info import LockInfo

from orc_team.client.holder import parse_client_id
from orc_team.client.replies import ServerError
from orc_team.protocol import FORBIDDEN, NOT_LOCK_OWNER, LockResult


def lock_info(data: dict[str, Any], *, mine: bool = False) -> LockInfo:
    """A LockInfo from a ``lock_result`` or a lock object of ``GET /api/locks``."""
    result = LockResult.from_json(data)
    lock = result.lock
    user = lock.owner
    host, pid = parse_client_id(lock.client)
    return LockInfo(
        lock.task_id, locked=True, owner=f"{user}@{host}" if host else user,
        user=user, host=host, pid=pid, acquired_at=lock.acquired_at,
        heartbeat_at=lock.heartbeat_at, ttl=lock.ttl, token=lock.token, mine=mine,
        display_name=lock.owner_name, email=lock.owner_email, stolen_from=result.stolen_from,
        lock_domain=lock.lock_domain, last_head=head_from(result.last_head))


def held_by(data: dict[str, Any], user: str | None, client: str) -> bool:
    """Is this lock object held by exactly this holder (user + client instance)?"""
    return data.get("owner") == user and data.get("client") == client


def same_person_here(info: LockInfo, user: str | None, host: str) -> bool:
    """``mine`` as the file lease has it: the same user on the same host."""
    return info.user is not None and info.user == user and info.host == host


def refusal(exc: ServerError, task_id: str, lock: LockInfo | None = None) -> OrcError:
    """NOT_LOCK_OWNER and FORBIDDEN are answers about the lock (exit 1), like the file lease's;
    anything else stays a server error (exit 3).  None of them is a reason to fall back."""
    if exc.server_code == NOT_LOCK_OWNER:
        return NotOwner(f"{exc.server_message}; not yours to release (an admin may use --force)",
                        lock)
    if exc.server_code == FORBIDDEN:
        return Refused(f"{task_id}: {exc.server_message}")
    return exc
