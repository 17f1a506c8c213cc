"""Tokens: missing, bad and expired ones get HTTP 401 before any upgrade; none is ever logged."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from typing import Any

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import SECRET, Client, ServerProc, token

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
    await ws.send('{"type": "ping"}')
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(5):
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
