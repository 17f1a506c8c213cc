"""Request validation only the server does: typed access to a message's ``data``.

The wire format itself (message types, error codes, limits, shapes, the strict decoder) is
:mod:`orc_team.protocol`, shared with the client; this module checks the fields of a request the
envelope parser let through, naming the offending field in its error.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from orc_team.protocol import (
    DEFAULT_TTL,
    INVALID_MESSAGE,
    MAX_TTL,
    MIN_TTL,
    Envelope,
    ProtocolError,
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*")


class Fields:
    """Typed access to ``data`` that names the offending field in its error."""

    def __init__(self, env: Envelope) -> None:
        self.data = env.data
        self.req_id = env.id

    def fail(self, text: str) -> ProtocolError:
        return ProtocolError(INVALID_MESSAGE, text, self.req_id)

    def name(self, key: str, *, required: bool = False) -> str | None:
        """A task or project id: the core's task-id rule, so ids stay valid path components."""
        value = self.data.get(key)
        if value is None:
            if required:
                raise self.fail(f"data.{key} is required")
            return None
        if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
            raise self.fail(f"data.{key} must be 1-100 letters, digits, '.', '_' or '-', "
                            "starting with a letter or digit, without '..'")
        return value

    def task_id(self) -> str:
        value = self.name("task_id", required=True)
        assert value is not None
        return value

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(f"data.{key} must be a whole number from {lo} to {hi}")
        return value

    def flag(self, key: str) -> bool:
        value = self.data.get(key, False)
        if not isinstance(value, bool):
            raise self.fail(f"data.{key} must be true or false")
        return value

    def ttl(self) -> int:
        return self.integer("ttl", DEFAULT_TTL, MIN_TTL, MAX_TTL)

    def choice(self, key: str, choices: tuple[str, ...]) -> str | None:
        value = self.data.get(key)
        if value is not None and value not in choices:
            raise self.fail(f"data.{key} must be one of " + ", ".join(choices))
        return value if isinstance(value, str) else None

    def event_type(self) -> str:
        value = self.data.get("event_type")
        if not isinstance(value, str) or len(value) > 64 or not _EVENT_TYPE.fullmatch(value):
            raise self.fail("data.event_type must be a dotted lower-case name such as "
                            "'task.phase' (at most 64 characters)")
        return value

    def payload(self) -> dict[str, Any]:
        value = self.data.get("payload", {})
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail("data.payload must be an object")
        return value

    def one_target(self) -> tuple[Literal["task", "project"], str]:
        """Exactly one of task_id / project_id, as (kind, key)."""
        task, project = self.name("task_id"), self.name("project_id")
        if task is not None and project is None:
            return "task", task
        if project is not None and task is None:
            return "project", project
        raise self.fail("data needs exactly one of task_id and project_id")
