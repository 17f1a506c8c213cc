"""The ``lock.yaml`` format: written by hand-rolled formatting, read without a YAML parser.

The encoding is :mod:`orc_git.flatyaml` (no YAML parser on the hot path, safe loading for
anything else); files over :data:`MAX_BYTES` are not parsed, and every field is type-checked.
A file that fails any of this is *unreadable*, which the locker treats as a stale lease, never as
a crash.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from orc_git import flatyaml
from orc_git.config import MAX_TTL
from orc_git.handover import Head, head_from, head_line
from orc_git.locking.info import LockInfo, parse_rfc3339, rfc3339

MAX_BYTES = 64 * 1024

LIVE = b"released: false\n"
"""The first line of every lease orc-git writes."""
DEAD = b"released: true \n"
"""What a release writes over :data:`LIVE`, in place: the same length, so nothing else moves."""
RELEASED = b"released: true"
"""How a released lease (a tombstone) starts; one written by hand may lack the space."""
_MAX_TEXT = 512

# field -> (kind, required)
_FIELDS: dict[str, tuple[str, bool]] = {
    "task_id": ("str", True), "owner": ("str", True), "user": ("str", True),
    "host": ("str", True), "pid": ("pid", True), "pid_started": ("num", True),
    "acquired_at": ("time", True), "heartbeat_at": ("time", True), "ttl": ("ttl", True),
    "token": ("count", True), "host_id": ("str", False), "display_name": ("str", False),
    "email": ("str", False), "stolen_from": ("str", False), "held_by": ("str", False),
    "last_head": ("head", False),
}
"""A ``head`` kind is a hint (what the previous holder left): one that cannot be read is left
out, never a reason to call the lease unreadable."""


def grant_head(task_id: str, now: str, ttl: int, token: int, stolen_from: str | None) -> bytes:
    """The first lines of a new grant's lease (the holder's lines follow), the common case (not
    stolen) formatted directly, as :mod:`flatyaml` would: it is on every uncontended acquire."""
    if stolen_from is not None:
        return LIVE + flatyaml.dump((("task_id", task_id), ("acquired_at", now),
                                     ("heartbeat_at", now), ("ttl", ttl), ("token", token),
                                     ("stolen_from", stolen_from)))
    stamp = now.encode()
    return b'%stask_id: %s\nacquired_at: "%s"\nheartbeat_at: "%s"\nttl: %d\ntoken: %d\n' % (
        LIVE, _quoted(task_id), stamp, stamp, ttl, token)


@functools.lru_cache(maxsize=256)
def _quoted(task_id: str) -> bytes:
    return flatyaml.dump([("task_id", task_id)])[len("task_id: "):-1]


class Unreadable(ValueError):
    pass


def render(info: LockInfo) -> bytes:
    """The lease as orc-git writes it: first ``released: false``, the line a release flips
    (:mod:`orc_git.locking.lockio`)."""
    head = info.last_head
    return LIVE + flatyaml.dump((name, getattr(info, name)) for name in _FIELDS
                                if name != "last_head") + (
        b"" if head is None else head_line(head, b"last_head"))


def tombstone(info: LockInfo, head: Head | None) -> bytes:
    """A released lease whole, as a release that cannot write in place leaves it."""
    body = render(info)[len(LIVE):]
    return DEAD + body + (b"" if head is None else head_line(head))


def _check(name: str, kind: str, value: Any) -> Any:
    if isinstance(value, bool):
        raise Unreadable(f"{name} must not be a boolean")
    if kind == "time" and hasattr(value, "timestamp"):  # PyYAML reads unquoted times as
        from datetime import UTC  # datetimes; only it makes them, and it imported datetime

        value = rfc3339(value.replace(tzinfo=value.tzinfo or UTC).timestamp())
    if kind == "str" or kind == "time":
        if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
            raise Unreadable(f"{name} must be a non-empty string")
        if kind == "time" and parse_rfc3339(value) is None:
            raise Unreadable(f"{name} must be an RFC 3339 time, got {value[:40]!r}")
        return value
    if kind == "num":
        if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise Unreadable(f"{name} must be a non-negative number")
        return float(value)
    if not isinstance(value, int):
        raise Unreadable(f"{name} must be an integer, got {type(value).__name__}")
    if kind == "pid" and not 0 < value < 1 << 31:
        raise Unreadable(f"{name} {value} is not a process id")
    if kind == "ttl" and not 1 <= value <= MAX_TTL:
        raise Unreadable(f"{name} must be from 1 to {MAX_TTL} seconds, got {value}")
    if kind == "count" and not 0 <= value < 1 << 62:
        raise Unreadable(f"{name} must be a non-negative integer, got {value}")
    return value


def parse(raw: bytes, task_id: str) -> LockInfo:
    """Decode a lease file's bytes; raises :class:`Unreadable` with a reason a person can act on."""
    try:
        data = flatyaml.load(raw, MAX_BYTES)
    except flatyaml.NotFlatYaml as exc:
        raise Unreadable(str(exc)) from None
    fields: dict[str, Any] = {}
    for name, (kind, required) in _FIELDS.items():
        if kind == "head":
            head = head_from(data.get(name))
            if head is not None:
                fields[name] = head
            continue
        if name not in data or data[name] is None:
            if required:
                raise Unreadable(f"the field {name} is missing")
            continue
        try:
            fields[name] = _check(name, kind, data[name])
        except Unreadable:
            raise
        except (ValueError, TypeError, OverflowError, OSError) as exc:  # 10**400, year 1 ...
            raise Unreadable(f"{name} is out of range: {str(exc)[:200]}") from None
    if fields["task_id"] != task_id:
        raise Unreadable(f"it names task {fields['task_id'][:100]!r}, not {task_id!r}")
    return LockInfo(locked=True, **fields)
