"""What a lock looks like to everyone who is not its holder, and the events lockers emit."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from orc_git.handover import Head

STALE_REASONS = ("expired", "holder-dead", "unreadable")


def rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


_RFC3339 = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2})"
                      r"(?:\.[0-9]{1,9})?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))")


_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _is_date(year: int, month: int, day: int) -> bool:
    """A real proleptic Gregorian date from year 1 (no year 0, no February 30th), as
    ``datetime.date`` decides: its import (with ``calendar``'s) is a cost every hook would pay."""
    if year < 1 or not 1 <= month <= 12 or day < 1:
        return False
    leap = month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return day <= _MONTH_DAYS[month - 1] + leap


def _days_since_epoch(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a valid date (``calendar.timegm``'s arithmetic, in a March-based
    year so that the leap day comes last)."""
    year -= month <= 2
    era, year_of_era = divmod(year, 400)
    day_of_year = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def parse_rfc3339(text: str) -> float | None:
    """Whole seconds since the epoch of an RFC 3339 time (``Z`` or a ``+hh:mm`` offset, which
    is applied); ``None`` for anything else, trailing text or a missing offset included."""
    m = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        return None
    date, clock = m[1], m[2]
    year, month, day = int(date[:4]), int(date[5:7]), int(date[8:])
    hour, minute, second = int(clock[:2]), int(clock[3:5]), int(clock[6:])
    # The rules of time.strptime("%Y-%m-%dT%H:%M:%S") (leap seconds 60 and 61 allowed), without
    # it: its first call builds locale tables, a cost every git hook would pay.
    if hour > 23 or minute > 59 or second > 61 or not _is_date(year, month, day):
        return None
    t = _days_since_epoch(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
    if m[3]:
        if int(m[4]) > 23 or int(m[5]) > 59:
            return None
        t -= (1 if m[3] == "+" else -1) * (int(m[4]) * 3600 + int(m[5]) * 60)
    return float(t)


def utc_stamp(text: str | None) -> str | None:
    """A lock's time in the one form JSON gives it, whichever locker wrote it (file leases write
    whole seconds, the team server milliseconds): RFC 3339, UTC, whole seconds, ``Z``, as
    DESIGN's lock object has it.  Text that is not RFC 3339 is left as it is, never hidden."""
    t = parse_rfc3339(text) if text else None
    return text if t is None else rfc3339(t)


def readable_time(text: str | None) -> str:
    """The one form people read a lock's time in, in every mode: ``2026-12-03 08:19:21 UTC``
    (``-`` for none; text that is not RFC 3339 as it is)."""
    t = parse_rfc3339(text) if text else None
    if t is None:
        return text or "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


class LockInfo:
    """One task's lease as read from its store; ``locked`` False means nobody holds it.

    A plain class rather than a dataclass: git hooks import this, and ``dataclasses`` (with the
    ``inspect`` it pulls in and the code it compiles per class) is a cost they feel
    (``docs/benchmarks.md``).
    """

    __slots__ = ("acquired_at", "display_name", "email", "heartbeat_at", "held_by", "host",
                 "host_id", "last_head", "lock_domain", "locked", "mine", "mtime", "owner",
                 "pid", "pid_started", "problem", "stale", "stale_reason", "stolen_from",
                 "task_id", "token", "ttl", "user")

    def __init__(self, task_id: str, locked: bool = False, stale: bool = False,
                 stale_reason: str | None = None, owner: str | None = None,
                 user: str | None = None, host: str | None = None, pid: int | None = None,
                 acquired_at: str | None = None, heartbeat_at: str | None = None,
                 ttl: int | None = None, token: int | None = None, mine: bool = False,
                 pid_started: float | None = None, host_id: str | None = None,
                 display_name: str | None = None, email: str | None = None,
                 stolen_from: str | None = None, problem: str | None = None,
                 mtime: float | None = None, lock_domain: str | None = None,
                 held_by: str | None = None, last_head: Head | None = None) -> None:
        self.task_id = task_id
        self.locked = locked
        self.stale = stale
        self.stale_reason = stale_reason
        self.owner = owner
        self.user = user
        self.host = host
        self.pid = pid
        self.acquired_at = acquired_at
        self.heartbeat_at = heartbeat_at
        self.ttl = ttl
        self.token = token
        self.mine = mine
        self.pid_started = pid_started
        self.host_id = host_id
        self.display_name = display_name
        self.email = email
        self.stolen_from = stolen_from
        self.problem = problem  # why an unreadable lease could not be read
        self.mtime = mtime
        self.lock_domain = lock_domain  # where ``token`` counts (see orc_git.locking.domain)
        # How the lease was taken: "process" (the holder process renews and releases it itself:
        # `orc lock run`, `orc run`, hold()), "shell" (`orc lock acquire`, for its parent), or
        # None (a lease written before orc-git recorded it: treated as "shell").
        self.held_by = held_by
        # The head the previous holder left on release (orc_git.handover), as the grant found
        # it: the acquirer checks it against its own HEAD; None when none was recorded.
        self.last_head = last_head

    def __repr__(self) -> str:
        return (f"LockInfo({self.task_id!r}, locked={self.locked}, stale={self.stale_reason!r}, "
                f"owner={self.owner!r}, pid={self.pid}, token={self.token})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LockInfo):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    @property
    def expires_at(self) -> str | None:
        beat = parse_rfc3339(self.heartbeat_at) if self.heartbeat_at else None
        if beat is None or self.ttl is None:
            return None
        return rfc3339(beat + self.ttl)

    def with_(self, **changes: Any) -> LockInfo:
        copy = LockInfo(self.task_id)
        for name in self.__slots__:
            setattr(copy, name, changes.pop(name, getattr(self, name)))
        if changes:
            raise TypeError(f"LockInfo has no field(s) {', '.join(changes)}")
        return copy

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id, "locked": self.locked, "stale": self.stale,
            "stale_reason": self.stale_reason, "owner": self.owner, "user": self.user,
            "host": self.host, "pid": self.pid, "acquired_at": utc_stamp(self.acquired_at),
            "heartbeat_at": utc_stamp(self.heartbeat_at), "expires_at": self.expires_at,
            "ttl": self.ttl, "token": self.token, "mine": self.mine,
        }

    def who(self) -> str:
        if not self.locked:
            return "nobody"
        if self.stale_reason == "unreadable":
            return "an unreadable lease"
        name = f"{self.display_name} ({self.owner})" if self.display_name else str(self.owner)
        return f"{name}, pid {self.pid}"


class Answer(NamedTuple):
    """Where a locker's last answer came from, for the user to see (``"source"`` in ``--json``).

    ``source`` is ``team`` (the team server), ``file-fallback`` (this clone's file leases, because
    the team server could not be reached), ``file`` (p2p's file leases) or ``none`` (solo: nothing
    was consulted).  ``warnings`` says what that answer cannot know (empty when it is whole)."""

    source: str
    warnings: tuple[str, ...] = ()


class LockEvent(NamedTuple):
    """Passed to ``orc_git_lock_event``.

    ``kind`` is acquired, released, expired, holder-dead or unreadable (a stale lease taken over),
    stolen (taken by force), stale (found stale by a reader), or lost (a holder learned it lost).
    """

    kind: str
    task_id: str
    lock: LockInfo | None
    previous: LockInfo | None = None
    mode: str = "p2p"
