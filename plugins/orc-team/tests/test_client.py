"""The sync WebSocket client against real servers on loopback: correlation, failing fast,
timeouts, keepalive, reconnecting (re-subscribing), and its small parts (backoff, ids, settings)."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from orc_git.errors import ConfigError, InvalidInput, LockerUnavailable

from orc_team.client.backoff import Backoff
from orc_team.client.holder import client_id, parse_client_id
from orc_team.client.replies import ServerError
from orc_team.client.settings import ClientSettings, normalize_url, token_subject
from orc_team.client.wsclient import WSClient

from conftest import WAIT, ServerFactory, ServerProc, dead_url, settings_for, token, unique


@pytest.fixture
def clients() -> Any:
    made: list[WSClient] = []

    def make(settings: ClientSettings, instance: str | None = None) -> WSClient:
        client = WSClient(settings, instance or unique("inst"))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def test_replies_reach_their_own_request_across_threads(server: ServerProc,
                                                        clients: Any) -> None:
    client: WSClient = clients(settings_for(server, "alice", request_timeout=WAIT))
    prefix = unique("CORR")
    wrong: list[Any] = []

    def work(n: int) -> None:
        try:
            for i in range(12):  # 6 x 12 x 2 messages: within the server's burst of 200
                task = f"{prefix}-{n}-{i}"
                reply = client.request("lock", {"task_id": task, "ttl": 5})
                if reply["type"] != "lock_result" or reply["data"]["task_id"] != task:
                    wrong.append(reply)
                client.request("unlock", {"task_id": task})
        except Exception as exc:
            wrong.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 4)
    assert not wrong
    assert client.generation == 1  # one connection carried all of it


def test_the_requesting_thread_hands_on_what_is_not_its_reply(server: ServerProc,
                                                               clients: Any) -> None:
    """A requester reads the socket itself: events it reads on the way reach the listeners,
    in order, and each request still gets its own reply."""
    client: WSClient = clients(settings_for(server, "alice"))
    project = unique("proj")
    seen: queue.Queue[tuple[int, threading.Thread]] = queue.Queue()
    client.add_listener(lambda m: seen.put((m["data"]["payload"]["n"], threading.current_thread()))
                        if m["type"] == "event" else None)
    client.subscribe(project_id=project)
    for n in range(20):  # each event goes back to its publisher too: it is subscribed
        reply = client.request("event", {"event_type": "task.phase", "task_id": f"T-{project}",
                                         "project_id": project, "payload": {"n": n}})
        assert reply["type"] == "ack"
    got = [seen.get(timeout=WAIT) for _ in range(20)]
    assert [n for n, _ in got] == list(range(20))
    assert threading.main_thread() in {thread for _, thread in got}


def test_a_listener_may_make_a_request(server: ServerProc, clients: Any) -> None:
    """Listeners run on whichever thread is reading (here the idle client's own): a request
    from one is answered, not stuck behind its own read."""
    watcher: WSClient = clients(settings_for(server, "alice"))
    project = unique("proj")
    answers: queue.Queue[str] = queue.Queue()
    watcher.add_listener(lambda m: answers.put(watcher.request("ping")["type"])
                         if m["type"] == "event" else None)
    watcher.subscribe(project_id=project)
    clients(settings_for(server, "bob")).request("event", {
        "event_type": "task.phase", "task_id": f"T-{project}", "project_id": project,
        "payload": {}})
    assert answers.get(timeout=WAIT) == "pong"


def test_close_completes_the_closing_handshake(server: ServerProc, clients: Any) -> None:
    client: WSClient = clients(settings_for(server, "alice"))
    client.request("ping")
    client.close()
    assert not client.connected
    assert client.last_error is not None and "(1000)" in client.last_error.message  # echoed
    with pytest.raises(LockerUnavailable, match="closed"):
        client.request("ping")


def test_a_token_expiring_while_connected_is_a_config_error(server: ServerProc,
                                                            clients: Any) -> None:
    """The server closes with 1008: no fallback may hide that the token must be renewed."""
    issued = time.time()
    client: WSClient = clients(ClientSettings(f"ws://{server.base}",
                                              token("alice", expires_in=1, now=issued)))
    assert client.request("ping")["type"] == "pong"
    # Waiting for the token's clock to pass its exp is the point here, not a synchronisation.
    time.sleep(max(0.0, int(issued) + 1 - time.time()) + 0.05)
    with pytest.raises(ConfigError) as caught:
        client.request("ping")
    assert "token expired" in caught.value.message and "orc team token" in caught.value.message
    assert not isinstance(caught.value, LockerUnavailable)


def test_an_error_reply_is_a_server_error(server: ServerProc, clients: Any) -> None:
    client: WSClient = clients(settings_for(server, "alice"))
    with pytest.raises(ServerError) as caught:
        client.request("subscribe", {"task_id": unique("NEVER-HEARD")})
    assert caught.value.server_code == "NOT_FOUND"


def test_a_dead_server_fails_at_once(clients: Any) -> None:
    client: WSClient = clients(settings_for(dead_url(), "alice"))
    started = time.monotonic()
    with pytest.raises(LockerUnavailable) as caught:
        client.request("ping")
    assert time.monotonic() - started < 2.0
    assert "cannot reach the team server" in caught.value.message


def test_a_server_that_never_answers_the_handshake_times_out(clients: Any) -> None:
    with socket.socket() as silent:  # the kernel completes the TCP handshake; nobody accepts
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"ws://127.0.0.1:{silent.getsockname()[1]}"
        client: WSClient = clients(settings_for(url, "alice", open_timeout=0.3))
        started = time.monotonic()
        with pytest.raises(LockerUnavailable) as caught:
            client.request("ping")
        elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 3.0, elapsed
    assert "timed out" in caught.value.message


def test_a_refused_token_is_a_config_error_not_a_fallback(server: ServerProc,
                                                          clients: Any) -> None:
    forged = ClientSettings(f"ws://{server.base}", token("alice", secret="another-" + "x" * 40))
    with pytest.raises(ConfigError) as caught:
        clients(forged).request("ping")
    assert "refused the token" in caught.value.message
    assert not isinstance(caught.value, LockerUnavailable)


def test_a_stopped_server_times_out_then_answers_late(start_server: ServerFactory,
                                                      clients: Any) -> None:
    server = start_server()
    client: WSClient = clients(settings_for(server, "alice", request_timeout=0.3))
    late: queue.Queue[dict[str, Any]] = queue.Queue()
    client.on_late = late.put
    client.request("ping")
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(LockerUnavailable) as caught:
            client.request("ping")
        assert time.monotonic() - started < 2.0
        assert "did not answer ping within 0.3 s" in caught.value.message
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert late.get(timeout=WAIT)["type"] == "pong"  # kept, not dropped
    assert client.request("ping")["type"] == "pong"  # the same connection goes on
    assert client.generation == 1
    server.stop()


def test_a_server_that_stops_reading_cannot_block_a_sender(start_server: ServerFactory,
                                                           clients: Any) -> None:
    """Sends into a stopped server fill the socket buffers; then a send gives up within the
    request timeout and the connection ends, instead of blocking the caller for ever."""
    server = start_server("--rate", "100000", "--burst", "100000")
    client: WSClient = clients(settings_for(server, "alice", request_timeout=0.5))
    client.request("ping")
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        blob = "x" * 60_000  # under the server's 64 KiB message limit
        sent = 0
        while sent < 2_000 and client.send("event", {"event_type": "bulk", "blob": blob}):
            sent += 1  # 2,000 x 60 kB is far beyond any loopback socket buffer
        assert 0 < sent < 2_000
        assert client.wait_for(lambda c: not c.connected, timeout=WAIT)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert client.request("ping")["type"] == "pong"  # a new connection
    assert client.generation == 2
    server.stop()


def test_a_message_over_the_size_limit_ends_the_connection_at_once(clients: Any) -> None:
    """A server answering with 3 MiB (the client takes 2 MiB): the request fails at once with
    the reason, and the next request opens a new connection."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("oversized_server.py"))],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        port = re.search(r"127\.0\.0\.1:(\d+)", proc.stderr.readline())
        assert port is not None
        client: WSClient = clients(settings_for(f"ws://127.0.0.1:{port[1]}", "alice",
                                                request_timeout=WAIT))
        for generation in (1, 2):
            started = time.monotonic()
            with pytest.raises(LockerUnavailable, match="1009"):
                client.request("ping")
            assert time.monotonic() - started < WAIT / 2  # not the request timeout
            assert client.generation == generation and not client.connected
    finally:
        proc.kill()
        proc.wait()


def test_reconnects_and_subscribes_again_after_a_restart(start_server: ServerFactory,
                                                         clients: Any) -> None:
    server = start_server()
    project = unique("proj")
    watcher: WSClient = clients(settings_for(server, "alice"))
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    watcher.add_listener(events.put)
    watcher.subscribe(project_id=project)
    server.stop(signal.SIGKILL)
    assert watcher.wait_for(lambda c: not c.connected, WAIT)
    server.start()
    assert watcher.wait_for(lambda c: c.restored >= 2, 15), "did not reconnect"

    publisher: WSClient = clients(settings_for(server, "bob"))
    publisher.request("event", {"event_type": "task.phase", "task_id": f"T-{project}",
                                "project_id": project, "payload": {"phase": "build"}})
    deadline = time.monotonic() + WAIT
    while True:
        message = events.get(timeout=max(0.01, deadline - time.monotonic()))
        if message.get("type") == "event":
            break
    assert message["data"]["project_id"] == project
    assert message["data"]["payload"] == {"phase": "build"}
    server.stop()


def test_keepalive_drops_a_silent_server_and_reconnects(start_server: ServerFactory,
                                                        clients: Any) -> None:
    server = start_server()
    watcher: WSClient = clients(settings_for(server, "alice", keepalive=0.3))
    watcher.subscribe(project_id=unique("proj"))  # something to restore: stay connected
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        # No request is made: only the library's ping can notice.
        assert watcher.wait_for(lambda c: not c.connected, WAIT), "silent peer not noticed"
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert watcher.wait_for(lambda c: c.restored >= 2, 15), "did not reconnect"
    server.stop()


def test_backoff_doubles_to_its_cap_with_jitter() -> None:
    low = Backoff(0.1, 1.0, rand=lambda: 0.0)
    assert [round(low.next(), 3) for _ in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    high = Backoff(0.1, 1.0, rand=lambda: 1.0)
    assert [round(high.next(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    high.reset()
    assert round(high.next(), 3) == 0.1
    spread = {round(Backoff(1.0, 1.0).next(), 6) for _ in range(20)}
    assert len(spread) > 10 and all(0.5 <= d <= 1.0 for d in spread)


def test_client_id_names_one_holder_process() -> None:
    mine = client_id()
    assert mine == client_id(os.getpid())  # stable: acquire and heartbeat agree
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", mine)  # the server's rule
    host, pid = parse_client_id(mine)
    assert pid == os.getpid() and host
    child = subprocess.run([sys.executable, "-c", "from orc_team.client.holder import "
                            "client_id; print(client_id())"], capture_output=True, text=True,
                           check=True, timeout=30).stdout.strip()
    assert child != mine and parse_client_id(child)[0] == host
    assert parse_client_id("laptop-1") == (None, None)


def test_settings_read_urls_and_tokens() -> None:
    assert normalize_url("ws://127.0.0.1:8765/") == "ws://127.0.0.1:8765"
    assert normalize_url("http://h:1/api/ws") == "ws://h:1"
    assert normalize_url("https://example.com/orc/") == "wss://example.com/orc"
    for bad in ("127.0.0.1:8765", "ftp://h", "ws://h:notaport"):
        with pytest.raises(ConfigError):
            normalize_url(bad)
    assert token_subject(token("alice")) == "alice"
    assert token_subject("not-a-jwt") is None
    settings = ClientSettings("wss://example.com/orc", token("bob"))
    assert settings.http_base == "https://example.com/orc" and settings.user == "bob"


def test_no_fire_and_forget_about_a_task_with_a_request_in_flight(server: ServerProc,
                                                                   clients: Any) -> None:
    """What keeps a late grant's give-back from releasing a newer grant of the same task."""
    client: WSClient = clients(settings_for(server, "alice"))
    ws = client.connect()
    pending = client._replies.open("lock", ws, "T-FLIGHT")  # as request() registers it
    assert client.send("unlock", {"task_id": "T-FLIGHT"}, unless_in_flight="T-FLIGHT") is False
    assert client.send("ping", unless_in_flight="T-OTHER") is True
    client._replies.cancel(pending)
    assert client.send("unlock", {"task_id": "T-FLIGHT"}, unless_in_flight="T-FLIGHT") is True


def test_settings_from_the_config_layers() -> None:
    from orc_git.config import Config

    from orc_team.client.settings import settings_from_config

    config = Config({"team": {"server_url": "http://h:8765/api/ws/", "token": " t.k.n ",
                              "project": "acme", "timeout": 2}})
    s = settings_from_config(config)
    assert (s.base_url, s.token, s.project, s.request_timeout) == ("ws://h:8765", "t.k.n",
                                                                   "acme", 2.0)
    with pytest.raises(ConfigError, match=r"team\.server_url"):
        settings_from_config(Config({"team": {"token": "x"}}))
    with pytest.raises(ConfigError, match="needs a token"):
        settings_from_config(Config({"team": {"server_url": "ws://h:1"}}))
    with pytest.raises(ConfigError, match=r"team\.timeout"):
        settings_from_config(Config({"team": {"server_url": "ws://h:1", "token": "x",
                                              "timeout": "soon"}}))


@pytest.mark.parametrize(("data", "said"), [
    ({"event_type": "task.phase", "payload": {"phase": "\ud800"}}, "\\ud800"),
    ({"event_type": "task.phase", "payload": {"\udcff": 1}}, "\\udcff"),
    ({"event_type": "task.phase", "payload": {"ratio": float("nan")}}, "NaN"),
    ({"event_type": "task.phase", "payload": {"x": [float("-inf")]}}, "NaN"),
])
def test_what_the_server_would_refuse_is_refused_here_and_never_sent(
        server: ServerProc, clients: Any, data: dict[str, Any], said: str) -> None:
    """Issue 8, point 2: text that is not UTF-8 and non-finite numbers never leave the client;
    the caller gets InvalidInput with a printable message, and the connection goes on."""
    client: WSClient = clients(settings_for(server, "alice"))
    task = unique()
    with pytest.raises(InvalidInput) as info:
        client.request("event", {"task_id": task, **data})
    message = info.value.message
    assert message.isascii() and said in message and "team server" in message
    with pytest.raises(InvalidInput):  # fire and forget: refused the same way
        client.send("event", {"task_id": task, **data})
    with pytest.raises(ServerError) as unknown:  # nothing reached the server
        client.request("subscribe", {"task_id": task})
    assert unknown.value.server_code == "NOT_FOUND"
