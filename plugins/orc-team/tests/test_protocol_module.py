"""The shared wire protocol (:mod:`orc_team.protocol`) on its own: shapes, frames, refusals.

No server here: these are the parsing and encoding rules both ends import.
``tests/test_protocol.py`` checks the same rules as a client sees them through a real server.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from orc_git.errors import InvalidInput

from orc_team import protocol
from orc_team.client.convert import lock_info
from orc_team.client.wsclient import encode as client_encode
from orc_team.protocol import (
    INVALID_JSON,
    INVALID_MESSAGE,
    MESSAGE_TOO_LARGE,
    UNKNOWN_TYPE,
    EventData,
    InvalidText,
    LockObject,
    LockResult,
    PresenceData,
    ProtocolError,
)

LOCK = LockObject(
    task_id="t-1", project_id="p", owner="alice", owner_name="Alice", owner_email="a@x.org",
    client="box:123:ab12", token=7, ttl=60, acquired_at="2026-01-01T00:00:00.000Z",
    heartbeat_at="2026-01-01T00:00:10.000Z", expires_at="2026-01-01T00:01:10.000Z",
    lock_domain="d1")


def wire(value: dict[str, Any]) -> Any:
    """Through the wire and back, as the other end reads it."""
    return protocol.decode(protocol.encode(value))


# -- shapes round trip ----------------------------------------------------------------------

def test_lock_object_round_trips() -> None:
    data = wire(LOCK.to_json())
    assert list(data) == ["task_id", "project_id", "owner", "owner_name", "owner_email",
                          "client", "token", "ttl", "acquired_at", "heartbeat_at",
                          "expires_at", "lock_domain"]
    assert LockObject.from_json(data) == LOCK


def test_lock_result_round_trips_and_keeps_its_keys_first() -> None:
    result = LockResult(LOCK, acquired=True, extended=False, stolen_from="bob")
    data = wire(result.to_json())
    assert list(data)[:3] == ["acquired", "extended", "stolen_from"]
    assert data["task_id"] == "t-1" and data["token"] == 7
    assert LockResult.from_json(data) == result


def test_a_bare_lock_object_reads_as_a_result_not_granted() -> None:
    assert LockResult.from_json(LOCK.to_json()) == LockResult(LOCK)


def test_lock_object_decoding_is_lenient_about_odd_fields() -> None:
    odd = {"task_id": "t", "token": True, "ttl": "60", "owner": 5, "lock_domain": None}
    lock = LockObject.from_json(odd)
    assert lock == LockObject("t", None, None, None, None, None, None, None, None, None, None,
                              None)


def test_the_client_reads_the_servers_lock_object() -> None:
    info = lock_info(LockResult(LOCK, acquired=True, stolen_from="bob").to_json(), mine=True)
    assert (info.task_id, info.owner, info.user, info.host, info.pid) == (
        "t-1", "alice@box", "alice", "box", 123)
    assert (info.token, info.ttl, info.lock_domain, info.stolen_from, info.mine) == (
        7, 60, "d1", "bob", True)
    assert (info.display_name, info.email) == ("Alice", "a@x.org")
    assert info.acquired_at == LOCK.acquired_at and info.heartbeat_at == LOCK.heartbeat_at


def test_presence_and_event_messages_round_trip() -> None:
    presence: PresenceData = {
        "user_id": "alice", "display_name": "Alice", "email": None, "status": "active",
        "active_task": "t-1", "last_seen": protocol.iso(0.5), "connections": 2}
    message = protocol.message(protocol.PRESENCE, data={**presence,
                                                        "event_type": protocol.PRESENCE_ONLINE})
    assert wire(message) == {"type": "presence", "data": {**presence,
                                                         "event_type": "presence.online"}}
    event: EventData = {
        "event_type": protocol.LOCK_STOLEN, "task_id": "t-1", "project_id": None,
        "user": "bob", "user_name": None, "timestamp": protocol.iso(1.0), "offset": 3,
        "payload": {"old_token": 6, "token": 7}}
    assert wire(protocol.message(protocol.EVENT, data=event)) == {"type": "event",
                                                                   "data": event}


def test_every_client_type_parses_into_its_envelope() -> None:
    for kind in protocol.CLIENT_TYPES:
        env = protocol.parse(protocol.encode(protocol.message(kind, "r1", {"task_id": "t"})))
        assert env == protocol.Envelope(kind, "r1", {"task_id": "t"})
        assert kind in protocol.REPLY_TYPES
    assert protocol.parse(b'{"type":"ping","id":5}') == protocol.Envelope("ping", 5, {})


def test_error_always_has_an_id() -> None:
    assert protocol.error(None, INVALID_JSON, "x") == {
        "type": "error", "id": None, "data": {"code": "INVALID_JSON", "message": "x"}}


def test_iso_has_milliseconds() -> None:
    assert protocol.iso(86_400.0625) == "1970-01-02T00:00:00.062Z"


def test_client_and_server_share_the_limits() -> None:
    from orc_team.server.config import ServerConfig

    config = ServerConfig(secret="s" * 32, store="unused")
    assert config.max_frame == protocol.MAX_FRAME_BYTES == 2 * 1024 * 1024
    assert config.max_message == protocol.MAX_MESSAGE_BYTES


# -- refusals -------------------------------------------------------------------------------

def refused(raw: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        protocol.parse(raw)
    return caught.value


def test_bad_utf8_fails_the_frame() -> None:
    exc = refused(b'{"type":"ping","id":"a\xff"}')
    assert isinstance(exc, InvalidText) and exc.code == INVALID_MESSAGE
    assert "UTF-8" in exc.message and exc.req_id is None
    with pytest.raises(ValueError):
        protocol.decode(b'"\xc3"')


def test_a_lone_surrogate_escape_is_refused_with_the_id() -> None:
    exc = refused(b'{"type":"ping","id":"r1","data":{"x":"\\ud800"}}')
    assert (exc.code, exc.req_id) == (INVALID_MESSAGE, "r1")
    assert "surrogate" in exc.message
    # a surrogate pair is text, not a refusal
    assert protocol.parse(b'{"type":"ping","data":{"x":"\\ud83d\\ude00"}}').data == {"x": "😀"}


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_nan_and_infinite_numbers_are_not_json(number: bytes) -> None:
    exc = refused(b'{"type":"ping","data":{"x":' + number + b"}}")
    assert exc.code == INVALID_JSON
    with pytest.raises(ValueError):
        protocol.decode(number)


def test_encoding_refuses_what_is_not_json() -> None:
    with pytest.raises(ValueError):
        protocol.encode({"x": float("nan")})
    with pytest.raises(UnicodeEncodeError):
        protocol.encode({"x": "\udcff"})
    with pytest.raises(InvalidInput, match="not valid Unicode"):
        client_encode({"type": "lock", "data": {"task_id": "\udcff"}})
    with pytest.raises(InvalidInput, match="NaN and infinite"):
        client_encode({"type": "event", "data": {"payload": {"x": float("inf")}}})


def test_oversized_is_refused_with_the_id_when_readable() -> None:
    raw = json.dumps({"type": "event", "id": "big", "data": {"x": "y" * 100}}).encode()
    exc = protocol.oversized(raw, 64)
    assert (exc.code, exc.req_id) == (MESSAGE_TOO_LARGE, "big")
    assert f"at most 64 bytes; this one is {len(raw)}" in exc.message
    assert protocol.oversized(raw[:80], 64).req_id is None  # cut: no id to echo


@pytest.mark.parametrize("bad_id", ["x" * (protocol.MAX_ID_CHARS + 1), True, [1], {"a": 1}])
def test_bad_ids_are_refused(bad_id: object) -> None:
    exc = refused(json.dumps({"type": "ping", "id": bad_id}).encode())
    assert exc.code == INVALID_MESSAGE and exc.req_id is None
    assert str(protocol.MAX_ID_CHARS) in exc.message


def test_a_long_id_within_the_limit_is_kept() -> None:
    good = "é" * protocol.MAX_ID_CHARS
    assert protocol.parse(json.dumps({"type": "ping", "id": good}).encode()).id == good


@pytest.mark.parametrize(("raw", "code"), [
    (b"[1]", INVALID_MESSAGE), (b'{"type":3}', INVALID_MESSAGE),
    (b'{"type":"nope","id":"r"}', UNKNOWN_TYPE), (b'{"type":"ping","data":[1]}', INVALID_MESSAGE),
    (b"{", INVALID_JSON), (b"[" * 100_000, INVALID_JSON),
])
def test_malformed_envelopes(raw: bytes, code: str) -> None:
    assert refused(raw).code == code


def test_http_error_bodies_round_trip() -> None:
    body = protocol.encode(protocol.http_error(protocol.UNAUTHORIZED, "token expired"))
    assert json.loads(body) == {"error": {"code": "UNAUTHORIZED", "message": "token expired"}}
    assert protocol.http_error_text(protocol.decode(body)) == "token expired"
    assert protocol.http_error_text({"error": "x"}) is None
    assert protocol.http_error_text([1]) is None


def test_the_server_handles_every_client_type() -> None:
    from orc_team.server.dispatch import Dispatcher

    missing = [t for t in protocol.CLIENT_TYPES if not callable(getattr(Dispatcher, f"on_{t}",
                                                                        None))]
    assert missing == []
