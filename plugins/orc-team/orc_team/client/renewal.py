"""A lease held on the server, and the judgement of each answer to renewing it.

The protocol has no "extend only" message: a ``lock`` after the server expired a lease grants it
afresh.  So every renewal (heartbeat, re-assertion after a reconnect) checks the token it gets back.
The same token is an extension.  The next token means the server had expired the lease and nobody
held the task in between (as after a long stall): renewed, with a warning, as the file lease also
tolerates.  Any later token means someone else held it meanwhile: the new grant must be given back
and the holder told that the lease is lost.  A refusal means someone holds it now.  An answer from
another lock domain (the server came back with another store) counts tokens afresh: only its first
token, 1, says nobody held the task there before.
"""

from __future__ import annotations

import logging
from typing import Any

from orc_git.locking.info import LockInfo

from orc_team.client.convert import lock_info

log = logging.getLogger("orc_git.team")


class Held:
    """A lease a locker holds on the server: its last LockInfo, its TTL, and why it is lost
    (set by an announcement or a failed re-assertion; the next heartbeat raises it)."""

    __slots__ = ("info", "lost", "ttl")

    def __init__(self, info: LockInfo, ttl: int) -> None:
        self.info = info
        self.ttl = ttl
        self.lost: str | None = None

    @property
    def token(self) -> int | None:
        return self.info.token


def judge(task_id: str, held: Held, result: dict[str, Any]) -> tuple[str | None, bool]:
    """``(why lost, give back)`` for a ``lock_result`` answering a renewal of ``held``:
    ``(None, False)`` when the lease is still ours (``held.info`` is then updated)."""
    info = lock_info(result, mine=True)
    if not result.get("acquired"):
        info.mine = False
        return (f"{task_id}: the lease was taken over on the team server by {info.who()} "
                f"(token {info.token})"), False
    old = held.token
    if (held.info.lock_domain is not None and info.lock_domain is not None
            and info.lock_domain != held.info.lock_domain):
        old = 0  # another store: none of its tokens was ours
    if result.get("extended") or info.token == old:
        held.info = info
        return None, False
    if old is not None and info.token == old + 1:
        log.warning("%s: the team server had expired the lease and nobody took it meanwhile; "
                    "renewed with token %s", task_id, info.token)
        held.info = info
        return None, False
    return (f"{task_id}: the lease expired on the team server and another holder had it "
            f"meanwhile (token {old} -> {info.token}); it is no longer held"), True
