"""Request validation only the server does: typed access to a message's ``data``.

The wire format itself (message types, error codes, limits, shapes, the strict decoder) is
:mod:`orc_team.protocol`, shared with the client; this module checks the fields of a request the
envelope parser let through, naming the offending field in its error.
"""

from __future__ import annotations

import datetime
import re
from typing import Any, Literal

from orc_git.handover import head_from

from orc_team.protocol import (
    DEFAULT_TTL,
    INVALID_MESSAGE,
    MAX_RESOURCE_BYTES,
    MAX_TTL,
    MIN_TTL,
    Envelope,
    HeadData,
    ProtocolError,
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*")
EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")
"""A publisher's event id: a UUID in practice; any short printable token is accepted."""
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:[Zz]|[+-]\d\d:\d\d)")
_EPOCH = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_SINCE = 2**53 - 1  # what every JSON reader holds exactly


class Fields:
    """Typed access to ``data`` that names the offending field in its error."""

    def __init__(self, env: Envelope, where: str = "data") -> None:
        self.data = env.data
        self.req_id = env.id
        self.where = where
        """How errors name the object: ``data``, or ``data.events[3]`` for a batch's entry."""

    def fail(self, text: str) -> ProtocolError:
        return ProtocolError(INVALID_MESSAGE, text.replace("data.", self.where + ".", 1),
                             self.req_id)

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

    def resource_id(self) -> str:
        """The task-id rule again: a resource id is safe as a path component and a URL
        segment."""
        value = self.name("resource_id", required=True)
        assert value is not None
        return value

    def content(self) -> str:
        value = self.data.get("content")
        if not isinstance(value, str):
            raise self.fail("data.content is required: the resource's text, a string")
        try:
            size = len(value.encode())
        except UnicodeEncodeError:  # a lone surrogate (an HTTP body's \ud800)
            raise self.fail("data.content must be UTF-8 text (it holds a lone UTF-16 "
                            "surrogate)") from None
        if size > MAX_RESOURCE_BYTES:
            raise self.fail(f"data.content may be at most {MAX_RESOURCE_BYTES} bytes of "
                            f"UTF-8; this is {size}")
        return value

    def version(self, key: str, *, lowest: int, required: str | None = None) -> int | None:
        """A resource version: None when absent (refused, saying ``required``, when given),
        else a whole number from ``lowest``."""
        if self.data.get(key) is None:
            if required is not None:
                raise self.fail(f"data.{key} is required: {required}")
            return None
        return self.integer(key, 0, lowest, MAX_SINCE)

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

    def event_id(self) -> str | None:
        value = self.data.get("event_id")
        if value is None:
            return None
        if not isinstance(value, str) or not EVENT_ID.fullmatch(value):
            raise self.fail("data.event_id must be 1-100 letters, digits, '.', '_', ':' or "
                            "'-' (a UUID), starting with a letter or digit")
        return value

    def made_at(self) -> str | None:
        """An RFC 3339 time, kept as sent when it is one."""
        value = self.data.get("made_at")
        if value is None:
            return None
        if isinstance(value, str) and len(value) <= 40 and _RFC3339.fullmatch(value):
            try:
                datetime.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
            except ValueError:
                pass
            else:
                return value
        raise self.fail("data.made_at must be an RFC 3339 time such as "
                        "'2026-01-02T03:04:05.678Z'")

    def since(self) -> int | None:
        if self.data.get("since") is None:
            return None
        return self.integer("since", 0, 0, MAX_SINCE)

    def epoch(self) -> str | None:
        value = self.data.get("epoch")
        if value is None:
            return None
        if not isinstance(value, str) or not _EPOCH.fullmatch(value):
            raise self.fail("data.epoch must be the epoch a subscribed or ack gave (1-64 "
                            "letters, digits, '.', '_' or '-')")
        return value

    def payload(self) -> dict[str, Any]:
        value = self.data.get("payload", {})
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail("data.payload must be an object")
        return value

    def head(self) -> HeadData | None:
        """An ``unlock``'s ``head`` (``{commit, branch}``), as :class:`HeadData` without its
        ``by`` and ``at`` (the server's to add); None when absent."""
        value = self.data.get("head")
        if value is None:
            return None
        head = head_from(value)
        if head is None or not isinstance(value, dict) or (
                value.get("branch") is not None and head.branch is None):
            raise self.fail("data.head must be {commit, branch}: commit a full hex object id, "
                            "branch null or a branch name (letters, digits, '._/@+-')")
        return {"commit": head.commit, "branch": head.branch, "by": None, "at": None}

    def one_target(self) -> tuple[Literal["task", "project"], str]:
        """Exactly one of task_id / project_id, as (kind, key)."""
        task, project = self.name("task_id"), self.name("project_id")
        if task is not None and project is None:
            return "task", task
        if project is not None and task is None:
            return "project", project
        raise self.fail("data needs exactly one of task_id and project_id")
