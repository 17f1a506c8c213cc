"""The team wire protocol, shared by the server and the client: what travels, not how.

``{type, id?, data?}`` JSON objects in WebSocket text frames.  This module holds everything both
ends must agree on and nothing about sockets (as python-websockets keeps its Sans-I/O core apart
from its adapters): the message types, the error codes, the limits, the shapes of the lock
object, presence and event messages, and the strict frame encoder/decoder.  The server's request
validation (:mod:`orc_team.server.fields`) and the client's connection
(:mod:`orc_team.client.wsclient`) are adapters around it.

Adding a message type is a change here: an entry in :data:`REPLY_TYPES` (a request and the
type of its reply) or :data:`PUSH_TYPES` (a message only the server sends), plus its shape
below if it carries one; the server's dispatcher then needs a handler for a new request.

Everything a client can get wrong in an envelope is a :class:`ProtocolError`, carrying the
request's ``id`` whenever it could be read, so the server keeps the rule "every message with an
``id`` gets exactly one reply with that ``id``" without knowing how parsing failed.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any, TypedDict, cast

from orc_git.config import MAX_TTL as MAX_TTL

# -- message types --------------------------------------------------------------------------

SUBSCRIBE = "subscribe"
UNSUBSCRIBE = "unsubscribe"
LOCK = "lock"
UNLOCK = "unlock"
PRESENCE = "presence"
"""A client's presence update, and the server's push of a user's presence (and its reply)."""
EVENT = "event"
"""A client's published event, and the server's push of any event to its subscribers."""
EVENTS = "events"
"""A batch of published events (``data: {events: [event data, ...]}``), answered by one
``acks``: how the outbox delivers a backlog or a chatty run without one round trip per event.
A batch counts as one message against the rate limit."""
PING = "ping"
RESOURCE_GET = "resource_get"
RESOURCE_PUT = "resource_put"
RESOURCE_LIST = "resource_list"
RESOURCE_MERGE = "resource_merge"
"""``{resource_id, base_version, content}``: the server's three-way merge (``git merge-file``)
of ``content`` (made from ``base_version``) with the current version, answered by ``merged``
``{resource_id, version, base_version, content, conflicts}`` (``version``: the one merged with,
to save against; ``conflicts``: how many are left between markers).  For clients without git
(the dashboard); nothing is saved."""
MERGED = "merged"
RESOURCE = "resource"
RESOURCES = "resources"
LOCK_RESULT = "lock_result"
UNLOCK_RESULT = "unlock_result"
ACK = "ack"
ACKS = "acks"
ERROR = "error"

REPLY_TYPES: dict[str, str] = {
    SUBSCRIBE: "subscribed", UNSUBSCRIBE: "unsubscribed", LOCK: LOCK_RESULT,
    UNLOCK: UNLOCK_RESULT, PRESENCE: PRESENCE, EVENT: ACK, EVENTS: ACKS, PING: "pong",
    RESOURCE_GET: RESOURCE, RESOURCE_PUT: RESOURCE, RESOURCE_LIST: RESOURCES,
    RESOURCE_MERGE: MERGED,
}
"""Each message type a client sends, and the type of the server's reply to it (or ``error``)."""
CLIENT_TYPES = tuple(REPLY_TYPES)
PUSH_TYPES = (EVENT, PRESENCE)
"""Messages the server sends without being asked."""

# Event types the server announces itself; clients may not publish these prefixes.
LOCK_ACQUIRED = "lock.acquired"
LOCK_RELEASED = "lock.released"
LOCK_EXPIRED = "lock.expired"
LOCK_STOLEN = "lock.stolen"
PRESENCE_ONLINE = "presence.online"
PRESENCE_IDLE = "presence.idle"
PRESENCE_OFFLINE = "presence.offline"
RESOURCE_UPDATED = "resource.updated"
"""A shared resource got a new version: payload ``{resource_id, version, updated_by}``, sent
to the subscribers of the version's project and kept in its stream (``task_id`` null)."""
RESERVED_EVENT_PREFIXES = ("lock.", "presence.", "resource.")
PRESENCE_STATUSES = ("online", "away", "active")
ALL_PROJECTS = "all_projects"
"""``subscribe {all_projects: true}``: every project's live events (and those of no project),
for a view of the whole team (the dashboard).  Its ``subscribed`` lists ``projects``
(``[{project_id, epoch, last_offset}]``) to catch up from with ``GET /api/events``; it takes
no ``since``.  ``unsubscribe {all_projects: true}`` ends it."""
SUBPROTOCOL = "orc-team"
"""The WebSocket subprotocol a browser asks for: a page cannot set ``Authorization``, and a
``?token=`` would put the token in a URL.  It offers ``[SUBPROTOCOL, BEARER_PREFIX + token]``
and the server, having read the token from the second, selects the first."""
BEARER_PREFIX = "orc-team.bearer."

# -- error codes ----------------------------------------------------------------------------

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
UNAVAILABLE = "UNAVAILABLE"
"""The server's store (a Redis store's Redis) cannot be reached right now; retry later."""
CONFLICT = "CONFLICT"
"""A versioned write (``resource_put``) against a version that is not the current one; the
error's ``data`` also holds ``current`` (the whole current version) and ``expected_version``."""

# -- limits ---------------------------------------------------------------------------------

MAX_FRAME_BYTES = 2 * 1024 * 1024
"""Largest message either end receives at all; a larger one closes the connection (1009)."""
MAX_MESSAGE_BYTES = 64 * 1024
"""Largest message the server reads by default; larger ones are answered MESSAGE_TOO_LARGE."""
MAX_ID_CHARS = 128
DEFAULT_TTL = 60
MIN_TTL = 1
MAX_BATCH_EVENTS = 200
"""Most events in one ``events`` message; the outbox sends at most this many at a time."""
EVENTS_KEPT = 10_000
"""The server keeps at least this many of each project's latest events for replay."""
MAX_REPLAY = 1_000
"""Most events one ``GET /api/events`` answers (``limit``)."""
TRANSCRIPT_CHARS = 500
"""A ``task.transcript`` line's ``content`` is cut to this many characters, then ``...``."""
"""A lock's TTL in seconds: MIN_TTL to MAX_TTL (the core's bound, imported above)."""
MAX_RESOURCE_BYTES = 64 * 1024
"""A shared resource's content: UTF-8 text of at most this many bytes."""
MAX_RESOURCE_MESSAGE_BYTES = 6 * MAX_RESOURCE_BYTES + 4 * 1024
"""The largest ``resource_put`` (WebSocket message or HTTP body) read: the most content can
take once JSON-escaped (a control character is six bytes, ``\\u0001``) plus room for the rest.
Other messages keep the ``max_message`` limit."""

Id = str | int | float


class ProtocolError(Exception):
    """A request answered with ``{"type": "error"}``; never closes the connection."""

    def __init__(self, code: str, message: str, req_id: Id | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.req_id = req_id
        self.extra = extra
        """More of the error's ``data`` besides code and message (CONFLICT's ``current``)."""


class InvalidText(ProtocolError):
    """A text frame that is not UTF-8: RFC 6455 fails the connection (close code 1007)."""

    def __init__(self, message: str) -> None:
        super().__init__(INVALID_MESSAGE, message)


@dataclass(frozen=True)
class Envelope:
    type: str
    id: Id | None
    data: dict[str, Any]


# -- shapes ---------------------------------------------------------------------------------

def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(slots=True)
class LockObject:
    """A lock as the server shows it (``lock_result``, ``subscribed``, ``GET /api/locks``).
    ``token`` is the fencing token, counted in ``lock_domain`` (the server's store); times are
    :func:`iso` strings.  Slotted, not frozen, and written out in :meth:`to_json`: every lock
    reply builds one, and a frozen dataclass or ``asdict`` would triple what that costs."""

    task_id: str
    project_id: str | None
    owner: str | None
    owner_name: str | None
    owner_email: str | None
    client: str | None
    token: int | None
    ttl: int | None
    acquired_at: str | None
    heartbeat_at: str | None
    expires_at: str | None
    lock_domain: str | None

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "project_id": self.project_id, "owner": self.owner,
                "owner_name": self.owner_name, "owner_email": self.owner_email,
                "client": self.client, "token": self.token, "ttl": self.ttl,
                "acquired_at": self.acquired_at, "heartbeat_at": self.heartbeat_at,
                "expires_at": self.expires_at, "lock_domain": self.lock_domain}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LockObject:
        """Lenient: a field of the wrong type reads as None (an older or odd server must not
        crash a client that only wants to show the lock)."""
        return cls(
            task_id=str(data.get("task_id", "")), project_id=_str(data.get("project_id")),
            owner=_str(data.get("owner")), owner_name=_str(data.get("owner_name")),
            owner_email=_str(data.get("owner_email")), client=_str(data.get("client")),
            token=_int(data.get("token")), ttl=_int(data.get("ttl")),
            acquired_at=_str(data.get("acquired_at")),
            heartbeat_at=_str(data.get("heartbeat_at")),
            expires_at=_str(data.get("expires_at")), lock_domain=_str(data.get("lock_domain")))


class HeadData(TypedDict):
    """A holder's ``HEAD`` as a release records it (DESIGN, "Handing a task over through
    git").  An ``unlock``'s ``data.head`` sends ``commit`` (a full hex object id) and
    ``branch`` (the upstream, like ``origin/main``, or the branch; null when detached); the
    server adds ``by`` (the releasing user) and ``at`` (:func:`iso`) and keeps it as the
    task's ``last_head``, which ``lock.released`` and every later ``lock_result`` carry.
    Both ends check a head with :func:`orc_git.handover.head_from` (the commit and branch go
    to git as arguments on the next holder's machine)."""

    commit: str
    branch: str | None
    by: str | None
    at: str | None


@dataclass(slots=True)
class LockResult:
    """The ``data`` of a ``lock_result``: the lock object (the holder's, whether or not it was
    granted) and what happened.  A bare lock object reads as a result that was not granted.
    ``last_head`` is the head the task's last release recorded (None: none was)."""

    lock: LockObject
    acquired: bool = False
    extended: bool = False
    stolen_from: str | None = None
    last_head: HeadData | None = None

    def to_json(self) -> dict[str, Any]:
        return {"acquired": self.acquired, "extended": self.extended,
                "stolen_from": self.stolen_from, **self.lock.to_json(),
                "last_head": self.last_head}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LockResult:
        head = data.get("last_head")
        return cls(LockObject.from_json(data), acquired=data.get("acquired") is True,
                   extended=data.get("extended") is True,
                   stolen_from=_str(data.get("stolen_from")),
                   # unchecked: a reader checks it with orc_git.handover.head_from
                   last_head=cast(HeadData, head) if isinstance(head, dict) else None)


@dataclass(slots=True)
class Resource:
    """A version of a shared resource (``resource``, ``resources`` entries, CONFLICT's
    ``current``, ``GET /api/resources/{id}``).  ``content`` None: a listing's entry, which
    leaves the text out.  ``updated_at`` is an :func:`iso` string."""

    resource_id: str
    version: int
    content: str | None
    updated_by: str | None
    updated_at: str | None
    project_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"resource_id": self.resource_id, "version": self.version}
        if self.content is not None:
            out["content"] = self.content
        out.update(updated_by=self.updated_by, updated_at=self.updated_at,
                   project_id=self.project_id)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Resource:
        """Lenient like :meth:`LockObject.from_json`; a version that is not a number reads
        as 0 (no version)."""
        return cls(resource_id=str(data.get("resource_id", "")),
                   version=_int(data.get("version")) or 0, content=_str(data.get("content")),
                   updated_by=_str(data.get("updated_by")),
                   updated_at=_str(data.get("updated_at")),
                   project_id=_str(data.get("project_id")))


class PresenceData(TypedDict):
    """The ``data`` of a ``presence`` push (``event_type``: presence.*) and of each entry of
    ``GET /api/presence`` (without ``event_type``)."""

    user_id: str
    display_name: str | None
    email: str | None
    status: str
    active_task: str | None
    last_seen: str
    connections: int


class EventData(TypedDict, total=False):
    """The ``data`` of an ``event`` push; ``holder`` only on events a client published.

    ``event_id`` (a UUID) is made by the publisher with the event and kept by the server: it
    drops an ``event_id`` it already stored, so re-sending from the outbox is always safe.
    ``made_at`` is when the publisher made it (an outbox may deliver it much later);
    ``timestamp`` is when the server stamped it."""

    event_id: str
    event_type: str
    task_id: str
    project_id: str | None
    user: str | None
    user_name: str | None
    made_at: str | None
    timestamp: str
    offset: int | None
    holder: bool
    payload: dict[str, Any]


class PublishData(TypedDict, total=False):
    """What a client sends as an ``event``'s ``data`` (and as each entry of ``events``)."""

    event_id: str
    event_type: str
    task_id: str
    project_id: str | None
    made_at: str
    payload: dict[str, Any]


class AckData(TypedDict, total=False):
    """The ``data`` of an ``ack``, and each entry of ``acks.acks``.  ``duplicate``: the
    server already had this ``event_id`` (the stamps are the stored ones).  ``epoch``: the
    project stream's epoch (an id that changes whenever its offsets restart).  In an ``acks``
    an event that was refused has ``event_id`` and ``error: {code, message}`` instead; a
    refusal is final (re-sending it cannot succeed), except ``RATE_LIMITED``, ``INTERNAL`` and
    ``UNAVAILABLE``."""

    event_id: str
    task_id: str
    project_id: str | None
    offset: int | None
    epoch: str | None
    timestamp: str
    duplicate: bool
    holder: bool
    """Whether the sender held the task's lock, as in the event (acks always said so)."""
    error: dict[str, str]


class SubscribedData(TypedDict, total=False):
    """The ``data`` of ``subscribed``.  With ``since`` (and the ``epoch`` it was counted in) a
    project subscription is followed by every stored event with a larger offset, in order,
    then live ones; ``truncated`` says events between ``since`` and the oldest kept one (or
    of an unknown epoch) are gone."""

    task_id: str
    project_id: str
    current_state: dict[str, Any]
    epoch: str
    last_offset: int
    truncated: bool


class LockAcquiredPayload(TypedDict):
    task_id: str
    owner: str | None
    owner_name: str | None
    client: str
    ttl: int
    token: int
    expires_at: str


class LockStolenPayload(LockAcquiredPayload):
    old_owner: str | None
    old_client: str
    old_token: int
    new_owner: str | None


class LockReleasedPayload(TypedDict):
    task_id: str
    owner: str | None
    client: str
    token: int
    forced_by: str | None
    """The admin who released another holder's lock; None when the holder released it."""
    last_head: HeadData | None
    """The task's ``last_head`` after this release: the head it recorded, or the one kept
    from before when the ``unlock`` sent none."""


class LockExpiredPayload(TypedDict):
    task_id: str
    previous_owner: str | None
    previous_client: str
    token: int
    expired_at: str


# -- building messages ----------------------------------------------------------------------

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


def message(type_: str, req_id: Id | None = None, data: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_}
    if req_id is not None:
        out["id"] = req_id
    if data is not None:
        out["data"] = data
    return out


def error(req_id: Id | None, code: str, text: str,
          extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """An error always has an ``id``: the request's, or null when it had none that could be
    echoed (not JSON, not a string or number, not UTF-8 text)."""
    return {"type": ERROR, "id": req_id, "data": {"code": code, "message": text,
                                                   **(extra or {})}}


def http_error(code: str, text: str) -> dict[str, Any]:
    """The JSON body of an HTTP refusal (401, 429) before or instead of the WebSocket."""
    return {"error": {"code": code, "message": text}}


def http_error_text(doc: object) -> str | None:
    """The message of an :func:`http_error` body; None when ``doc`` is not one."""
    error = doc.get("error") if isinstance(doc, dict) else None
    return str(error.get("message", "")) if isinstance(error, dict) else None


# -- strict frames --------------------------------------------------------------------------

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode(message: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; fan-out encodes once and sends the same bytes to every subscriber.
    One encoder for all: ``json.dumps`` with options builds a new one per call.  Strict: a NaN
    (ValueError) or a lone surrogate (UnicodeEncodeError) raises rather than sending invalid
    JSON; :func:`parse` keeps both out of everything a client sends."""
    return _ENCODER.encode(message).encode()


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


def decode(raw: bytes) -> Any:
    """The JSON value of a text frame: strict UTF-8 (``json.loads`` of bytes would also take
    UTF-16 and encoded surrogates), no NaN or Infinity.  Raises ValueError (UnicodeDecodeError
    is one) or RecursionError."""
    return _DECODER.decode(raw.decode())


def _utf8(value: object) -> bool:
    """Can ``value`` (a decoded message, keys included) be written as UTF-8 JSON?"""
    try:
        _ENCODER.encode(value).encode()
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


def valid_id(value: object) -> bool:
    """A request id: a string of at most MAX_ID_CHARS characters (UTF-8 text) or a finite
    number that is not a boolean."""
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return len(value) <= MAX_ID_CHARS and (value.isascii() or _utf8(value))
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def recover_id(raw: bytes) -> Id | None:
    """The ``id`` of a message refused before parsing (too large), when it can be read at all."""
    try:
        doc = decode(raw)
    except (ValueError, RecursionError):
        return None
    value = doc.get("id") if isinstance(doc, dict) else None
    return value if valid_id(value) else None


def oversized(raw: bytes, limit: int) -> ProtocolError:
    """The refusal of a message longer than ``limit`` bytes (the caller compares: the common
    case costs one ``len``), with its ``id`` when that can be read."""
    return ProtocolError(MESSAGE_TOO_LARGE, f"a message may be at most {limit} bytes; this "
                         f"one is {len(raw)}", recover_id(raw))


def parse(raw: bytes) -> Envelope:
    """Decode a client's message and check its envelope.  Every string anywhere in it must be
    UTF-8 text: a lone surrogate stored or echoed would make every later read of it fail."""
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
    usable = req_id if valid_id(req_id) else None
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
    if kind not in REPLY_TYPES:
        shown = kind if len(kind) <= 40 else kind[:37] + "..."
        raise ProtocolError(UNKNOWN_TYPE, f"unknown message type {shown!r}; expected one of "
                            + ", ".join(CLIENT_TYPES), req_id)
    data = doc.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProtocolError(INVALID_MESSAGE, "data must be an object", req_id)
    return Envelope(kind, req_id, data)
