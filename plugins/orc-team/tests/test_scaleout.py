"""Several ``orc team serve`` processes on one real redis-server (``--store redis://…``): one lock
holder across all of them, events and presence across them, ``lock.expired`` announced once,
and what a Redis restart (``kill -9`` with its AOF, or one that lost everything) and an outage
do to locks, tokens and answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from conftest import (
    WAIT,
    Client,
    LockerFactory,
    RedisProc,
    ServerProc,
    needs_redis,
    token,
    unique,
)

pytestmark = needs_redis

Servers = Callable[..., list[ServerProc]]


@pytest.fixture
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """``servers(redis, n, *args)``: n server processes on that redis-server."""
    started: list[ServerProc] = []

    def start(redis: RedisProc, n: int, *args: str) -> list[ServerProc]:
        made = [ServerProc(redis.url, tmp_path_factory.mktemp("orc-home"), list(args))
                for _ in range(n)]
        started.extend(made)
        return made

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Callable[..., RedisProc]]:
    """``own_redis(appendonly=True)``: a redis-server of the test's own, to kill and restart."""
    made: list[RedisProc] = []

    def make(appendonly: bool = True, *args: str) -> RedisProc:
        workdir = tmp_path / f"redis{len(made)}"
        workdir.mkdir()
        made.append(RedisProc(workdir, appendonly=appendonly, args=args))
        return made[-1]

    yield make
    for proc in made:
        proc.kill()


def wait_until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll a condition another process makes true (a restart), with a deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def healthy(server: ServerProc) -> bool:
    return server.http("/api/health")[0] == 200


async def test_one_holder_across_three_instances_under_a_race(
        redis_server: RedisProc, servers: Servers, connect_as: Any) -> None:
    trio = servers(redis_server, 3)
    clients: list[Client] = [await connect_as(f"user{i}", on=trio[i % 3]) for i in range(9)]
    task, project = unique("RACE"), unique("proj")
    tokens: list[int] = []
    for _ in range(15):
        results = await asyncio.gather(*(c.lock(task, project_id=project) for c in clients))
        winners = [(c, r) for c, r in zip(clients, results, strict=True) if r["acquired"]]
        assert len(winners) == 1, results  # one holder, whichever process each asked
        winner, result = winners[0]
        assert all(r["token"] == result["token"] for r in results)  # all see that lease
        tokens.append(result["token"])
        reply = await winner.request("unlock", {"task_id": task})
        assert reply["type"] == "unlock_result" and reply["data"]["released"], reply
    assert tokens == sorted(set(tokens)) and tokens[-1] - tokens[0] == len(tokens) - 1


async def test_events_reach_every_instance_in_offset_order(
        redis_server: RedisProc, servers: Servers, connect_as: Any) -> None:
    trio = servers(redis_server, 3)
    project = unique("proj")
    watchers = [await connect_as(f"watch{i}", on=server) for i, server in enumerate(trio)]
    for watcher in watchers:
        assert (await watcher.request("subscribe", {"project_id": project}))["type"] == \
            "subscribed"
    publishers = [await connect_as(f"pub{i}", on=trio[i]) for i in range(2)]

    async def publish(client: Client, n: int) -> None:
        task = unique("EV")
        for i in range(n):
            reply = await client.request("event", {"event_type": "task.progress",
                                                   "task_id": task, "project_id": project,
                                                   "payload": {"i": i}})
            assert reply["type"] == "ack", reply

    await asyncio.gather(*(publish(p, 20) for p in publishers))
    for watcher in watchers:
        offsets = [(await watcher.event("task.progress"))["offset"] for _ in range(40)]
        assert offsets == list(range(offsets[0], offsets[0] + 40)), offsets


async def test_a_lock_on_one_instance_is_seen_and_announced_on_the_others(
        redis_server: RedisProc, servers: Servers, connect_as: Any) -> None:
    a, b = servers(redis_server, 2)
    task, project = unique("T"), unique("proj")
    alice = await connect_as("alice", on=a)
    bob = await connect_as("bob", on=b)
    await bob.request("subscribe", {"project_id": project})
    granted = await alice.lock(task, project_id=project, ttl=60)
    assert granted["acquired"]
    seen = await bob.event("lock.acquired", task)
    assert seen["payload"]["token"] == granted["token"] and seen["user"] == "alice"
    status, body = b.http(f"/api/locks/{task}", token("bob"))
    assert status == 200 and body["lock"]["owner"] == "alice"
    assert body["lock_domain"] == granted["lock_domain"]
    refused = await bob.lock(task)
    assert not refused["acquired"] and refused["owner"] == "alice"


async def test_lock_expired_is_announced_once_across_instances(
        redis_server: RedisProc, servers: Servers, connect_as: Any) -> None:
    trio = servers(redis_server, 3)
    task, project = unique("EXP"), unique("proj")
    watchers = [await connect_as(f"w{i}", on=server) for i, server in enumerate(trio)]
    for watcher in watchers:
        await watcher.request("subscribe", {"project_id": project})
    holder = await connect_as("alice", on=trio[0])
    assert (await holder.lock(task, project_id=project, ttl=1))["acquired"]
    for watcher in watchers:
        await watcher.event("lock.expired", task, timeout=WAIT + 2)
    marker = unique("MARK")
    await holder.request("event", {"event_type": "task.progress", "task_id": marker,
                                   "project_id": project, "payload": {}})
    for watcher in watchers:  # in offset order: a second lock.expired would come before it
        await watcher.event("task.progress", marker)
        assert not [m for m in watcher.inbox
                    if (m.get("data") or {}).get("event_type") == "lock.expired"]


async def test_one_presence_for_connections_on_two_instances(
        redis_server: RedisProc, servers: Servers, connect_as: Any) -> None:
    a, b, c = servers(redis_server, 3)
    user = unique("carol").lower()
    bob = await connect_as("bob", on=c)
    first = await connect_as(user, on=a)
    await bob.presence(user, "online")
    second = await connect_as(user, on=b)
    await second.request("presence", {"status": "active", "active_task": "T-1"})
    active = await bob.presence(user, "active")
    assert active["active_task"] == "T-1"

    def listed() -> list[dict[str, Any]]:
        return [p for p in c.http("/api/presence", token("bob"))[1]["presence"]
                if p["user_id"] == user]

    wait_until(lambda: [p["connections"] for p in listed()] == [2], "two connections")
    await second.close()
    await bob.presence(user, "online")  # still connected on the other process
    assert [p["status"] for p in listed()] == ["online"]
    await first.close()
    left = await bob.presence(user, "offline")
    # every instance lists who left, as announced, though the user was never connected to c
    for instance in (a, b, c):
        [gone] = [p for p in instance.http("/api/presence", token("bob"))[1]["presence"]
                  if p["user_id"] == user]
        assert (gone["status"], gone["connections"]) == ("offline", 0)
    assert [p["last_seen"] for p in listed()] == [left["last_seen"]]


@pytest.mark.parametrize("how", ["kill -9", "SIGTERM"])
async def test_redis_restarted_from_its_aof(
        how: str, own_redis: Any, servers: Servers, connect_as: Any) -> None:
    """kill -9 (or a graceful stop) of redis-server: what it acknowledged is in its AOF, so
    the lease is still held (no second grant) and tokens only go up."""
    redis = own_redis()
    a, b = servers(redis, 2)
    task = unique("AOF")
    alice = await connect_as("alice", on=a, client="alice-laptop")
    held = await alice.lock(task, ttl=60)
    assert held["acquired"]
    if how == "kill -9":
        redis.kill()
    else:
        redis.stop()
    wait_until(lambda: not healthy(a), "health says the store is down")
    redis.start()
    wait_until(lambda: healthy(a) and healthy(b), "both servers healthy again")
    bob = await connect_as("bob", on=b)
    refused = await bob.lock(task)
    assert not refused["acquired"] and refused["token"] == held["token"]
    again = await alice.lock(task, ttl=60)  # the heartbeat: still the same lease
    assert again["acquired"] and again["extended"] and again["token"] == held["token"]
    assert (await alice.request("unlock", {"task_id": task}))["data"]["released"]
    regrant = await bob.lock(task)
    assert regrant["acquired"] and regrant["token"] > held["token"]
    assert regrant["lock_domain"] == held["lock_domain"]

async def test_tokens_never_go_back_when_redis_loses_everything(
        own_redis: Any, servers: Servers, connect_as: Any) -> None:
    """A redis-server without persistence restarted: every key is gone, the fencing counters
    with them; the epoch (the Redis clock, and above what this server saw) keeps tokens up."""
    redis = own_redis(appendonly=False)
    [server] = servers(redis, 1)
    task = unique("LOSS")
    alice = await connect_as("alice", on=server)
    first = await alice.lock(task, ttl=60)
    assert (await alice.request("unlock", {"task_id": task}))["data"]["released"]
    redis.kill()
    redis.start()
    wait_until(lambda: healthy(server), "the server healthy again")
    after = await alice.lock(task, ttl=60)
    assert after["acquired"] and after["token"] > first["token"]
    assert after["lock_domain"] == first["lock_domain"]

async def test_redis_unreachable_answers_unavailable_and_recovers(
        own_redis: Any, servers: Servers, connect_as: Any) -> None:
    redis = own_redis()
    [server] = servers(redis, 1)
    alice = await connect_as("alice", on=server)
    task = unique("DOWN")
    redis.kill()
    for _ in range(3):
        reply = await alice.request("lock", {"task_id": task}, timeout=WAIT + 5)
        assert reply["type"] == "error" and reply["data"]["code"] == "UNAVAILABLE", reply
    status, body = server.http("/api/health")
    assert status == 503 and body["status"] == "unavailable"
    status, body = server.http("/api/locks", token("alice"))
    assert status == 503 and body["error"]["code"] == "UNAVAILABLE"
    assert server.logged("is unreachable")
    assert server.log.count("is unreachable") == 1 and "Traceback" not in server.log
    redis.start()
    wait_until(lambda: healthy(server), "the server healthy again")
    assert (await alice.lock(task))["acquired"]  # the same connection carries on
    assert server.logged("answers again")

def test_serve_refuses_a_malformed_url_and_an_unreachable_redis(tmp_path: Path) -> None:
    from conftest import SECRET, dead_url, run_orc

    env = {"ORC_TEAM_SECRET": SECRET, "ORC_HOME": str(tmp_path)}
    bad = run_orc("team", "serve", "--port", "0", "--store", "redis://127.0.0.1:x/0",
                  cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "HOST[:PORT][/DB]" in bad.stderr
    port = dead_url().rsplit(":", 1)[1]
    down = run_orc("team", "serve", "--port", "0", "--store", f"redis://127.0.0.1:{port}/0",
                   cwd=tmp_path, env=env)
    assert down.returncode == 3 and "cannot use the Redis store" in down.stderr
    assert "Traceback" not in down.stderr


async def test_a_client_with_several_urls_keeps_its_leases_when_an_instance_is_killed(
        redis_server: RedisProc, servers: Servers, connect_as: Any,
        make_locker: LockerFactory) -> None:
    """kill -9 of the instance a client is connected to: its next request goes to the other
    URL, with the same client instance id, and its lease carries on (same token)."""
    a, b = servers(redis_server, 2)
    urls = (f"ws://{a.base}", f"ws://{b.base}")
    locker = make_locker(urls[0], "alice", client="alice-laptop", servers=urls)
    task = unique("FAILOVER")
    held = locker.acquire(task, ttl=60)
    a.kill()
    renewed = await asyncio.to_thread(locker.heartbeat, task)
    assert renewed.token == held.token and renewed.lock_domain == held.lock_domain
    bob = await connect_as("bob", on=b)
    refused = await bob.lock(task)
    assert not refused["acquired"] and refused["client"] == "alice-laptop"
    assert await asyncio.to_thread(locker.release, task)
    assert (await bob.lock(task))["acquired"]


def test_several_urls_are_read_from_the_configuration() -> None:
    from orc_team.client.settings import settings_from_config

    class Config:
        sources: ClassVar[dict[str, str]] = {}

        def get(self, key: str, default: Any = None) -> Any:
            return {"team.server_url": "ws://a:1, http://b:2/", "team.token": "t"}.get(
                key, default)

    settings = settings_from_config(Config())
    assert settings.base_url == "ws://a:1" and settings.urls == ("ws://a:1", "ws://b:2")


@pytest.mark.parametrize("how", ["SIGTERM", "kill -9"])
async def test_presence_of_an_instance_goes_with_it(
        how: str, redis_server: RedisProc, servers: Servers, connect_as: Any) -> None:
    """Stopped, it removes its users' presence at once; killed, its liveness key expires and
    the others remove its entries."""
    a, b = servers(redis_server, 2)
    user = unique("dave").lower()
    bob = await connect_as("bob", on=b)
    await connect_as(user, on=a)
    await bob.presence(user, "online")
    if how == "SIGTERM":
        a.stop()
    else:
        a.kill()
    await bob.presence(user, "offline", timeout=15)


async def test_task_subscribers_elsewhere_hear_lock_events_without_a_project(
        redis_server: RedisProc, servers: Servers, connect_as: Any) -> None:
    a, b = servers(redis_server, 2)
    task = unique("NOPROJ")
    alice = await connect_as("alice", on=a)
    assert (await alice.lock(task))["acquired"]  # the task is known from now on
    assert (await alice.request("unlock", {"task_id": task}))["data"]["released"]
    bob = await connect_as("bob", on=b)
    assert (await bob.request("subscribe", {"task_id": task}))["type"] == "subscribed"
    granted = await alice.lock(task)  # at once: the subscription was known before its reply
    seen = await bob.event("lock.acquired", task)
    assert seen["payload"]["token"] == granted["token"] and seen["project_id"] is None
    await alice.request("unlock", {"task_id": task})
    assert (await bob.event("lock.released", task))["payload"]["token"] == granted["token"]


async def test_a_redis_with_a_password(own_redis: Any, servers: Servers, connect_as: Any,
                                       tmp_path: Path) -> None:
    """The password in the URL is used, and never logged or repeated in an error."""
    from conftest import SECRET, run_orc

    redis = own_redis(True, "--requirepass", "s3cret-pass")
    url = f"redis://:s3cret-pass@127.0.0.1:{redis.port}/0"
    [server] = servers(type("Url", (), {"url": url})(), 1)
    alice = await connect_as("alice", on=server)
    assert (await alice.lock(unique("PW")))["acquired"]
    assert "s3cret-pass" not in server.log and "redis://***@127.0.0.1" in server.log
    wrong = run_orc("team", "serve", "--port", "0", "--store",
                    f"redis://:wrong-pass@127.0.0.1:{redis.port}/0", cwd=tmp_path,
                    env={"ORC_TEAM_SECRET": SECRET, "ORC_HOME": str(tmp_path)})
    assert wrong.returncode == 3 and "cannot use the Redis store" in wrong.stderr
    assert "wrong-pass" not in wrong.stderr and "Traceback" not in wrong.stderr
