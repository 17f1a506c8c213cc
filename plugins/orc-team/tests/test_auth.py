"""Tokens: missing, bad and expired ones get HTTP 401 before any upgrade; none is ever logged."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from typing import Any

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import SECRET, Client, ServerProc, elapsed_since, token

BAD_TOKENS = {
    "missing": None,
    "garbage": "not-a-jwt",
    "wrong secret": token("mallory", secret="another-secret-" + "x" * 32),
    "expired": token("alice", now=time.time() - 7200, expires_in=3600),
    "unknown role": jwt.encode({"sub": "alice", "role": "root", "exp": time.time() + 60},
                               SECRET, algorithm="HS256"),
    "no sub": jwt.encode({"role": "member", "exp": time.time() + 60}, SECRET,
                         algorithm="HS256"),
    "no exp": jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"),
    "alg none": jwt.encode({"sub": "alice", "exp": time.time() + 60}, None, algorithm="none"),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_bad_tokens_get_401_before_upgrade(server: ServerProc, case: str) -> None:
    bad = BAD_TOKENS[case]
    with pytest.raises(InvalidStatus) as info:
        await connect(server.ws_url(bad), open_timeout=5)
    assert info.value.response.status_code == 401
    assert server.http("/api/locks", bad)[0] == 401
    assert server.http("/api/presence", bad)[0] == 401
    assert server.logged("auth refused")
    if bad:
        assert bad not in server.log


async def test_bearer_header_is_accepted(server: ServerProc) -> None:
    ws = await connect(server.ws_url(None), open_timeout=5,
                       additional_headers={"Authorization": f"Bearer {token('alice')}"})
    assert (await Client(ws, "alice", None).request("ping"))["type"] == "pong"
    await ws.close()


async def test_tokens_never_reach_the_log(server: ServerProc, connect_as: Any) -> None:
    alice: Client = await connect_as("alice")
    await alice.request("ping")
    status, _ = server.http("/api/presence", token("alice"))
    assert status == 200
    await alice.close()
    secret_part = token("alice").split(".")[2]
    assert server.logged("connect <conn")
    assert not re.search(r"token=[A-Za-z0-9]", server.log)
    assert secret_part not in server.log


async def test_a_token_expiring_during_the_connection_closes_it(server: ServerProc) -> None:
    issued = time.time()
    ws = await connect(server.ws_url(token("alice", expires_in=1, now=issued)), open_timeout=5)
    assert (await Client(ws, "alice", None).request("ping"))["type"] == "pong"
    # Waiting for the token's clock to pass its exp is the point here, not a synchronisation.
    await asyncio.sleep(max(0.0, int(issued) + 1 - time.time()) + 0.05)
    with pytest.raises(ConnectionClosed) as info:  # closed already, or on this message
        async with asyncio.timeout(5):
            await ws.send('{"type": "ping"}')
            while True:
                await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    assert "expired" in info.value.rcvd.reason


async def test_a_malformed_client_id_is_400(server: ServerProc) -> None:
    with pytest.raises(InvalidStatus) as info:
        await connect(server.ws_url(token("alice"), "bad!id"), open_timeout=5)
    assert info.value.response.status_code == 400


def orc(*args: str, secret: str | None = SECRET) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ORC_TEAM_SECRET"}
    if secret is not None:
        env["ORC_TEAM_SECRET"] = secret
    return subprocess.run([sys.executable, "-m", "orc_git", *args], env=env, text=True,
                          capture_output=True, timeout=30)


def test_orc_team_token_mints_a_verifiable_token() -> None:
    done = orc("team", "token", "--user", "bob", "--name", "Bob Johnson", "--email",
               "bob@example.com", "--role", "admin", "--expires", "600")
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip(), SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["name"], claims["email"], claims["role"]) == (
        "bob", "Bob Johnson", "bob@example.com", "admin")
    assert 590 < claims["exp"] - time.time() <= 600


def test_orc_team_without_a_secret_says_so() -> None:
    for args in (("team", "token", "--user", "bob"), ("team", "serve", "--port", "0")):
        done = orc(*args, secret=None)
        assert done.returncode == 2 and "ORC_TEAM_SECRET is not set" in done.stderr
        assert "Traceback" not in done.stderr
    done = orc("team", "token", "--user", "bob", "--role", "root")
    assert done.returncode == 2


HOSTILE_CLAIMS = {
    "exp 10**400": {"sub": "alice", "exp": 10**400},
    "exp 1e400": None,  # built below: PyJWT would refuse to encode inf
    "exp string": {"sub": "alice", "exp": "soon"},
    "sub with newline": {"sub": "al\nice", "exp": int(time.time()) + 60},
    "sub with ESC": {"sub": "al\x1b[31mice", "exp": int(time.time()) + 60},
    "sub too long": {"sub": "a" * 65, "exp": int(time.time()) + 60},
    "name with bidi": {"sub": "alice", "name": "Al\u202eice", "exp": int(time.time()) + 60},
    "name too long": {"sub": "alice", "name": "A" * 101, "exp": int(time.time()) + 60},
    "email with newline": {"sub": "alice", "email": "a@b\nc", "exp": int(time.time()) + 60},
    "lifetime past the maximum": {"sub": "alice", "iat": int(time.time()),
                                  "exp": int(time.time()) + 31 * 86400},
    "no iat, exp too far": {"sub": "alice", "exp": int(time.time()) + 31 * 86400},
}


def _raw_token(claims: dict[str, Any]) -> str:
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    head = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(
        b'{"sub":"alice","exp":1e400}' if not claims else __import__("json").dumps(claims)
        .encode())
    sig = b64(hmac.new(SECRET.encode(), head, hashlib.sha256).digest())
    return (head + b"." + sig).decode()


@pytest.mark.parametrize("case", list(HOSTILE_CLAIMS))
async def test_hostile_claims_get_401_never_500(server: ServerProc, case: str) -> None:
    bad = _raw_token(HOSTILE_CLAIMS[case] or {})
    status, body = server.http("/api/locks", bad)
    assert status == 401, (status, body)
    assert body["error"]["code"] == "UNAUTHORIZED" and body["error"]["message"]
    with pytest.raises(InvalidStatus) as info:
        await connect(server.ws_url(bad), open_timeout=5)
    assert info.value.response.status_code == 401
    assert "Traceback" not in server.log


def test_the_server_enforces_its_maximum_lifetime(start_server: Any) -> None:
    short = start_server("--max-token-lifetime", "600")
    assert short.http("/api/locks", token("alice", expires_in=601))[0] == 401
    assert short.logged("lives longer than this server's maximum of 600 s")
    assert short.http("/api/locks", token("alice", expires_in=600))[0] == 200
    short.stop()


@pytest.mark.parametrize("args", [
    ("--user", "al\nice"), ("--user", "al ice"), ("--user", "a" * 65), ("--user", ""),
    ("--user", "bob", "--name", "Bob\x1b[2J"), ("--user", "bob", "--name", "B\u202eob"),
    ("--user", "bob", "--name", "x" * 101), ("--user", "bob", "--email", "not an email"),
    ("--user", "bob", "--expires", str(30 * 86400 + 1)),
])
def test_orc_team_token_refuses_what_the_server_would(args: tuple[str, ...]) -> None:
    done = orc("team", "token", *args)
    assert done.returncode == 2, done
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert "error" in done.stderr


async def test_an_expiring_token_is_closed_at_expiry_without_sending(
        start_server: Any, connect_as: Any) -> None:
    server = start_server("--rate", "100000", "--burst", "100000")  # bob publishes flat out
    project = f"expiry-{os.getpid()}-{time.monotonic_ns()}"
    exp = int(time.time()) + 2
    ws = await connect(server.ws_url(token("erin", expires_in=exp - int(time.time()),
                                           now=int(time.time()))), open_timeout=5)
    erin = Client(ws, "erin", None)
    await erin.request("subscribe", {"project_id": project})
    bob: Client = await connect_as("bob", on=server)
    received: list[dict[str, Any]] = []
    stamps: list[str] = []

    async def read() -> None:
        while True:
            m = json.loads(await ws.recv())
            if m.get("type") == "event":
                received.append(m["data"])

    reader = asyncio.create_task(read())
    async with asyncio.timeout(15):
        n = 0
        while not reader.done():  # publish until erin's connection is closed by the server
            ack = await bob.request("event", {"event_type": "task.transcript",
                                              "task_id": f"EXP-{n}", "project_id": project,
                                              "payload": {"n": n}})
            stamps.append(ack["data"]["timestamp"])
            n += 1
        with pytest.raises(ConnectionClosed) as info:
            await reader
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    assert "token expired" in info.value.rcvd.reason
    assert received, "erin heard nothing before expiry"
    assert any(elapsed_since(s) <= time.time() - exp for s in stamps), "none after exp"
    for event in received:  # nothing stamped at or after exp reached her
        assert time.time() - elapsed_since(event["timestamp"]) < exp, event
    server.stop()


async def test_client_text_cannot_forge_log_lines(server: ServerProc) -> None:
    status, _ = server.http("/api/locks/x%0a2026-01-01%2000:00:00,000%20INFO%20"
                            "forged%1b[31m%e2%80%ae")
    assert status == 401
    assert server.logged("auth refused: GET /api/locks/x\\n2026")
    assert not any(line.startswith("2026-01-01") or "forged\x1b" in line or "\u202e" in line
                   for line in server.lines)


async def test_an_oversized_header_is_a_4xx_and_one_short_line(start_server: Any) -> None:
    fresh = start_server()
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=5) as s:
        s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  + b"eyJ" + b"A" * 20_000 + b"\r\n\r\n")
        answer = s.recv(100)
    assert answer.split()[1] in (b"400", b"431"), answer
    assert fresh.logged("bad request from 127.0.0.1: LineTooLong")
    assert fresh.http("/api/health") == (200, {"status": "ok"})
    assert "Traceback" not in fresh.log and "eyJ" not in fresh.log
    assert sum("bad request" in line for line in fresh.lines) == 1
    fresh.stop()
