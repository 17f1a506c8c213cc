"""The wire format: ``{type, id?, data?}`` JSON objects, their validation and the error codes.

Everything a client can get wrong is turned into a :class:`ProtocolError` here, carrying the
request's ``id`` whenever it could be read, so that the dispatcher can keep the rule "every message
with an ``id`` gets exactly one reply with that ``id``" without knowing how parsing failed.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from orc_git.config import MAX_TTL

INVALID_JSON = "INVALID_JSON"
INVALID_MESSAGE = "INVALID_MESSAGE"
UNKNOWN_TYPE = "UNKNOWN_TYPE"
NOT_FOUND = "NOT_FOUND"
FORBIDDEN = "FORBIDDEN"
NOT_LOCK_OWNER = "NOT_LOCK_OWNER"
MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
RATE_LIMITED = "RATE_LIMITED"
UNAUTHORIZED = "UNAUTHORIZED"
INTERNAL = "INTERNAL"

CLIENT_TYPES = ("subscribe", "unsubscribe", "presence", "lock", "unlock", "ping", "event")
DEFAULT_TTL = 60
MAX_ID_CHARS = 128
PRESENCE_STATUSES = ("online", "away", "active")
RESERVED_EVENT_PREFIXES = ("lock.", "presence.")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*")

Id = str | int | float


class ProtocolError(Exception):
    """A request the server answers with ``{"type": "error"}``; never closes the connection."""

    def __init__(self, code: str, message: str, req_id: Id | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.req_id = req_id


@dataclass(frozen=True)
class Envelope:
    type: str
    id: Id | None
    data: dict[str, Any]


def iso(t: float) -> str:
    """RFC 3339 UTC with milliseconds: TTLs are short, whole seconds would hide a second."""
    whole = int(t)
    millis = int((t - whole) * 1000)
    return f"{_second(whole)}.{millis:03d}Z"


@functools.lru_cache(maxsize=256)
def _second(whole: int) -> str:
    """A lock reply carries three times, mostly now and now + TTL: formatting each second once
    saves most of a reply's cost outside the store."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode(message: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; fan-out encodes once and sends the same bytes to every subscriber.
    One encoder for all: ``json.dumps`` with options builds a new one per call.  Strict: a NaN
    (ValueError) or a lone surrogate (UnicodeEncodeError) raises rather than sending invalid
    JSON; :func:`parse` keeps both out of everything a client sends."""
    return _ENCODER.encode(message).encode()


def message(type_: str, req_id: Id | None = None, data: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_}
    if req_id is not None:
        out["id"] = req_id
    if data is not None:
        out["data"] = data
    return out


def error(req_id: Id | None, code: str, text: str) -> dict[str, Any]:
    """An error always has an ``id``: the request's, or null when it had none that could be
    echoed (not JSON, not a string or number, not UTF-8 text)."""
    return {"type": "error", "id": req_id, "data": {"code": code, "message": text}}


class InvalidText(ProtocolError):
    """A text frame that is not UTF-8: RFC 6455 fails the connection (close code 1007)."""

    def __init__(self, message: str) -> None:
        super().__init__(INVALID_MESSAGE, message)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as inf
        raise ValueError(f"{text[:20]} is out of range for a number")
    return value


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""Where a lone surrogate can come from once the frame is valid UTF-8: a ``\\uD800``-``\\uDFFF``
escape.  Only a message with one (rare: an escaped emoji, say) pays for the full check."""


def _utf8(value: object) -> bool:
    """Can ``value`` (a decoded message, keys included) be written as UTF-8 JSON?"""
    try:
        _ENCODER.encode(value).encode()
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


def _valid_id(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return len(value) <= MAX_ID_CHARS and (value.isascii() or _utf8(value))
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _decode(raw: bytes) -> Any:
    """The JSON value of a text frame: strict UTF-8 (``json.loads`` of bytes would also take
    UTF-16 and encoded surrogates), no NaN or Infinity.  Raises ValueError or RecursionError."""
    return _DECODER.decode(raw.decode())


def recover_id(raw: bytes) -> Id | None:
    """The ``id`` of a message refused before parsing (too large), when it can be read at all."""
    try:
        doc = _decode(raw)
    except (ValueError, RecursionError):
        return None
    value = doc.get("id") if isinstance(doc, dict) else None
    return value if _valid_id(value) else None


def parse(raw: bytes) -> Envelope:
    """Decode and check the envelope.  Every string anywhere in the message must be UTF-8
    text: a lone surrogate stored or echoed would make every later read of it fail."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise InvalidText(f"a text frame must be UTF-8: {exc.reason} at byte {exc.start}"
                          ) from None
    try:
        doc = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(INVALID_JSON, f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError(INVALID_MESSAGE, "a message is a JSON object {type, id?, data?}")
    req_id = doc.get("id")
    usable = req_id if _valid_id(req_id) else None
    if _SURROGATE_ESCAPE.search(raw) and not _utf8(doc):
        raise ProtocolError(INVALID_MESSAGE, "a string in this message cannot be encoded as "
                            "UTF-8 (a lone UTF-16 surrogate escape such as \\ud800); nothing "
                            "was done", usable)
    if req_id is not None and usable is None:
        raise ProtocolError(INVALID_MESSAGE, f"id must be a string of at most {MAX_ID_CHARS} "
                            "characters or a number")
    kind = doc.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(INVALID_MESSAGE, "type must be a string", req_id)
    if kind not in CLIENT_TYPES:
        shown = kind if len(kind) <= 40 else kind[:37] + "..."
        raise ProtocolError(UNKNOWN_TYPE, f"unknown message type {shown!r}; expected one of "
                            + ", ".join(CLIENT_TYPES), req_id)
    data = doc.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProtocolError(INVALID_MESSAGE, "data must be an object", req_id)
    return Envelope(kind, req_id, data)


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
        return self.integer("ttl", DEFAULT_TTL, 1, MAX_TTL)

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
