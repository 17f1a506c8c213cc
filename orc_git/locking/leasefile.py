"""The ``lock.yaml`` format: written by hand-rolled formatting, read without a YAML parser.

The writer emits one ``key: value`` line per field with JSON scalars, which is plain YAML that any
tool can read.  The reader takes that exact shape with ``json.loads`` per line and falls back to
PyYAML's safe loader only for files some other writer produced; either way nothing executes tags,
files over :data:`MAX_BYTES` are not parsed, and every field is type-checked.  A file that fails
any of this is *unreadable*, which the locker treats as a stale lease, never as a crash.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from orc_git.config import MAX_TTL
from orc_git.locking.info import LockInfo, parse_rfc3339, rfc3339

MAX_BYTES = 64 * 1024
_MAX_TEXT = 512

# field -> (kind, required)
_FIELDS: dict[str, tuple[str, bool]] = {
    "task_id": ("str", True), "owner": ("str", True), "user": ("str", True),
    "host": ("str", True), "pid": ("pid", True), "pid_started": ("num", True),
    "acquired_at": ("time", True), "heartbeat_at": ("time", True), "ttl": ("ttl", True),
    "token": ("count", True), "host_id": ("str", False), "display_name": ("str", False),
    "email": ("str", False), "stolen_from": ("str", False),
}


class Unreadable(ValueError):
    pass


def render(info: LockInfo) -> bytes:
    lines = []
    for name in _FIELDS:
        value = getattr(info, name)
        if value is not None:
            lines.append(f"{name}: {json.dumps(value)}\n")
    return "".join(lines).encode()


def _fast_parse(text: str) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if not sep or key in out:
            return None
        try:
            out[key] = json.loads(value)
        except (ValueError, RecursionError):  # deeply nested brackets exhaust json's recursion
            return None
    return out


def _yaml_parse(raw: bytes) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(raw, Loader=loader)
    except yaml.YAMLError as exc:
        raise Unreadable(f"not valid YAML: {str(exc).splitlines()[0]}") from None
    except (RecursionError, MemoryError):
        raise Unreadable("YAML too deeply nested") from None
    except (ValueError, TypeError, OverflowError) as exc:  # constructors: `!!int x`, 2024-02-30
        raise Unreadable(f"not valid YAML: {str(exc)[:200]}") from None


def _check(name: str, kind: str, value: Any) -> Any:
    if isinstance(value, bool):
        raise Unreadable(f"{name} must not be a boolean")
    if kind == "time" and isinstance(value, datetime):  # YAML reads unquoted times as datetimes
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
    if not raw.strip():
        raise Unreadable("the file is empty")
    if len(raw) > MAX_BYTES:
        raise Unreadable(f"the file is larger than {MAX_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Unreadable("the file is not UTF-8 text") from None
    data = _fast_parse(text)
    if data is None:
        data = _yaml_parse(raw)
    if not isinstance(data, dict):
        raise Unreadable(f"expected a mapping, found {type(data).__name__}")
    fields: dict[str, Any] = {}
    for name, (kind, required) in _FIELDS.items():
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
