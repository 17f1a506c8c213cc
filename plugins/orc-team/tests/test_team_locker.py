"""WebSocketLocker (orc-git's Locker interface through the server) and the ``orc lock`` commands
in team mode, against real servers on loopback."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from orc_git.errors import LeaseLost, LockHeld, NotOwner, Refused

from orc_team.client.wsclient import WSClient

from conftest import (
    WAIT,
    LockerFactory,
    ServerFactory,
    ServerProc,
    git_repo,
    run_orc,
    settings_for,
    token,
    unique,
)


@pytest.fixture
def watch() -> Any:
    """``events = watch(server, project)``: a queue of the project's lock events."""
    made: list[WSClient] = []

    def subscribe(server: ServerProc, project: str) -> queue.Queue[dict[str, Any]]:
        client = WSClient(settings_for(server, "watcher"), unique("watcher"))
        made.append(client)
        events: queue.Queue[dict[str, Any]] = queue.Queue()
        client.add_listener(lambda m: events.put(m["data"]) if m["type"] == "event" else None)
        client.subscribe(project_id=project)
        return events

    yield subscribe
    for client in made:
        client.close()


def next_event(events: queue.Queue[dict[str, Any]], kind: str, task: str) -> dict[str, Any]:
    while True:
        event = events.get(timeout=WAIT)
        if event["event_type"] == kind and event["task_id"] == task:
            return event


def test_two_users_race_one_wins(server: ServerProc, make_locker: LockerFactory) -> None:
    alice, bob = make_locker(server, "alice"), make_locker(server, "bob")
    for _ in range(10):
        task = unique()
        start = threading.Barrier(2)
        results: dict[str, Any] = {}

        def race(name: str, locker: Any, task: str = task,
                 start: threading.Barrier = start, results: dict[str, Any] = results) -> None:
            start.wait(WAIT)
            try:
                results[name] = locker.acquire(task)
            except LockHeld as exc:
                results[name] = exc

        threads = [threading.Thread(target=race, args=(n, lk))
                   for n, lk in (("alice", alice), ("bob", bob))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        won = [n for n, r in results.items() if not isinstance(r, LockHeld)]
        assert len(won) == 1, results
        lost = results["bob" if won == ["alice"] else "alice"]
        assert lost.lock is not None and lost.lock.user == won[0] and lost.lock.token == 1
        assert results[won[0]].token == 1 and results[won[0]].mine


def test_same_user_second_instance_is_refused(server: ServerProc,
                                              make_locker: LockerFactory) -> None:
    task = unique()
    laptop = make_locker(server, "alice", client="vm:100:1")
    desktop = make_locker(server, "alice", client="vm:200:1")
    held = laptop.acquire(task, ttl=30)
    assert held.owner == "alice@vm" and held.pid == 100 and held.token == 1
    with pytest.raises(LockHeld) as caught:
        desktop.acquire(task)
    assert caught.value.lock is not None and caught.value.lock.pid == 100
    assert "alice@vm" in caught.value.message
    with pytest.raises(NotOwner):
        desktop.release(task)
    with pytest.raises(NotOwner):
        desktop.heartbeat(task)
    assert desktop.is_locked(task).mine  # same user, same host: shown as yours, still refused
    with pytest.raises(LockHeld, match="already held by this process"):
        laptop.acquire(task)
    assert laptop.release(task) is True
    assert desktop.acquire(task).token == 2


def test_heartbeat_extends_keeps_token_and_reads_agree(server: ServerProc,
                                                       make_locker: LockerFactory) -> None:
    task = unique()
    alice = make_locker(server, "alice")
    first = alice.acquire(task, ttl=20)
    beat = alice.heartbeat(task)
    assert beat.token == first.token and beat.ttl == 20
    assert beat.heartbeat_at is not None and first.heartbeat_at is not None
    assert beat.heartbeat_at >= first.heartbeat_at
    seen = make_locker(server, "bob").is_locked(task)
    assert seen.locked and seen.user == "alice" and seen.token == first.token and not seen.mine
    assert task in [info.task_id for info in alice.list_locks()]
    assert alice.clean() == []
    assert alice.release(task) is True
    assert not alice.is_locked(task).locked
    assert alice.release(task) is False
    with pytest.raises(NotOwner, match="not locked"):
        alice.heartbeat(task)


def test_member_force_is_refused_admin_force_steals(server: ServerProc,
                                                    make_locker: LockerFactory) -> None:
    task = unique()
    alice = make_locker(server, "alice")
    alice.acquire(task, ttl=60)
    bob = make_locker(server, "bob")
    with pytest.raises(Refused, match="admin"):
        bob.acquire(task, force=True)
    with pytest.raises(Refused, match="admin"):
        bob.release(task, force=True)
    boss = make_locker(server, "boss", role="admin")
    stolen = boss.acquire(task, force=True)
    assert stolen.stolen_from == "alice" and stolen.token == 2
    with pytest.raises(LeaseLost, match=r"stolen|taken over"):
        alice.heartbeat(task)
    with pytest.raises(NotOwner):  # no longer hers
        alice.release(task)
    assert boss.is_locked(task).user == "boss"


def test_a_stolen_lease_is_known_before_the_next_heartbeat(server: ServerProc,
                                                           make_locker: LockerFactory) -> None:
    task = unique()
    alice = make_locker(server, "alice")
    alice.acquire(task, ttl=60)
    boss = make_locker(server, "boss", role="admin")
    boss.release(task, force=True)  # forced release: announced to alice's connection
    assert alice.client.wait_for(lambda c: alice._held[task].lost is not None, WAIT)
    with pytest.raises(LeaseLost, match="released by force"):
        alice.heartbeat(task)


def test_an_expired_lease_is_renewed_only_if_nobody_had_it(server: ServerProc,
                                                           make_locker: LockerFactory,
                                                           watch: Any) -> None:
    project = unique("proj")
    events = watch(server, project)
    alice = make_locker(server, "alice", project=project)
    quiet = unique()
    alice.acquire(quiet, ttl=1)
    next_event(events, "lock.expired", quiet)
    assert alice.heartbeat(quiet).token == 2  # nobody had it: renewed, next token

    busy = unique()
    alice.acquire(busy, ttl=1)
    next_event(events, "lock.expired", busy)
    bob = make_locker(server, "bob", project=project)
    bob.acquire(busy)
    bob.release(busy)
    next_event(events, "lock.released", busy)  # Bob's
    with pytest.raises(LeaseLost, match=r"another holder had it meanwhile \(token 1 -> 3\)"):
        alice.heartbeat(busy)
    next_event(events, "lock.released", busy)  # alice's: the grant it must not keep, given back
    assert not bob.is_locked(busy).locked


def test_a_late_grant_is_given_back(start_server: ServerFactory, make_locker: LockerFactory,
                                    watch: Any) -> None:
    server = start_server()
    project = unique("proj")
    events = watch(server, project)
    alice = make_locker(server, "alice", project=project, request_timeout=0.3)
    alice.client.request("ping")
    task = unique()
    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(Exception, match="did not answer lock"):
            alice.acquire(task)
    finally:
        server.proc.send_signal(signal.SIGCONT)
    next_event(events, "lock.acquired", task)
    next_event(events, "lock.released", task)
    server.stop()


def test_restart_keeps_the_lease_and_the_holder_reasserts(start_server: ServerFactory,
                                                          make_locker: LockerFactory) -> None:
    server = start_server()
    task = unique()
    alice = make_locker(server, "alice", ttl=300)
    held = alice.acquire(task)
    server.stop(signal.SIGKILL)
    assert alice.client.wait_for(lambda c: not c.connected, WAIT)
    server.start()  # same port, same store
    assert alice.client.wait_for(lambda c: c.restored >= 2, 15), "no re-assertion"
    bob = make_locker(server, "bob")
    with pytest.raises(LockHeld) as caught:
        bob.acquire(task)
    assert caught.value.lock is not None and caught.value.lock.token == held.token
    assert caught.value.lock.lock_domain == held.lock_domain  # the store keeps its domain
    assert alice.heartbeat(task).token == held.token  # an extension: no second grant
    assert alice.release(task) is True
    assert held.token is not None and bob.acquire(task).token == held.token + 1
    server.stop()


# -- the CLI ---------------------------------------------------------------------------------


def orc_json(*args: str, repo: Path, user: str = "alice", url: str,
             role: str = "member") -> tuple[int, dict[str, Any]]:
    done = run_orc(*args, "--json", cwd=repo, env={
        "ORC_HOME": str(repo.parent / "home"), "ORC_MODE": "team", "ORC_TEAM_URL": url,
        "ORC_TEAM_TOKEN": token(user, role)})
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout + done.stderr
    out = json.loads(lines[0])
    assert out["schema"] == 1 and out["mode"] == "team"
    return done.returncode, out


def test_orc_lock_commands_in_team_mode(server: ServerProc, tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    url = f"ws://{server.base}"
    task = unique()
    code, out = orc_json("lock", "acquire", task, "--ttl", "30", repo=repo, url=url)
    assert code == 0 and out["acquired"] is True
    lock = out["lock"]
    assert lock["token"] == 1 and lock["user"] == "alice" and lock["mine"] and lock["ttl"] == 30
    assert not (repo / ".orc" / "tasks" / task / "lock.yaml").exists()  # on the server only

    code, out = orc_json("lock", "status", task, repo=repo, url=url)
    assert code == 0 and out["lock"]["locked"] and out["lock"]["token"] == 1
    # Each orc command's holder is its parent: this test process, the same for every call.
    code, out = orc_json("lock", "heartbeat", task, repo=repo, url=url)
    assert code == 0 and out["lock"]["token"] == 1 and out["lock"]["ttl"] == 30

    code, out = orc_json("lock", "acquire", task, repo=repo, url=url, user="bob")
    assert code == 1 and out["acquired"] is False
    assert out["error"]["code"] == "LOCK_HELD" and out["lock"]["user"] == "alice"
    code, out = orc_json("lock", "release", task, repo=repo, url=url, user="bob")
    assert code == 1 and out["error"]["code"] == "NOT_OWNER"
    code, out = orc_json("lock", "steal", task, repo=repo, url=url, user="bob")
    assert code == 1 and out["error"]["code"] == "REFUSED"

    code, out = orc_json("lock", "list", repo=repo, url=url)
    assert code == 0 and task in [lk["task_id"] for lk in out["locks"]]
    code, out = orc_json("lock", "clean", repo=repo, url=url)
    assert code == 0 and out["removed"] == []
    code, out = orc_json("lock", "release", task, repo=repo, url=url)
    assert code == 0 and out["released"] is True and out["lock"]["token"] == 1
    code, out = orc_json("lock", "wait", task, repo=repo, url=url)
    assert code == 0 and out["lock"]["locked"] is False
    code, out = orc_json("lock", "steal", task, repo=repo, url=url, user="boss", role="admin")
    assert code == 0 and out["lock"]["token"] == 2


def test_orc_lock_run_holds_on_the_server(server: ServerProc, tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    task = unique()
    env = {"ORC_HOME": str(tmp_path / "home"), "ORC_MODE": "team",
           "ORC_TEAM_URL": f"ws://{server.base}", "ORC_TEAM_TOKEN": token("alice")}
    probe = ("import json, urllib.request as u; r = u.Request("
             f"'http://{server.base}/api/locks/{task}', headers={{'Authorization': "
             f"'Bearer {token('carol')}'}}); print(json.load(u.urlopen(r))['lock']['token'])")
    done = run_orc("lock", "run", task, "--", "python", "-c", probe, cwd=repo, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
    assert server.http(f"/api/locks/{task}", token("carol"))[1]["locked"] is False
    failing = run_orc("lock", "run", task, "--", "python", "-c", "raise SystemExit(7)",
                      cwd=repo, env=env)
    assert failing.returncode == 7


def test_team_mode_config_problems_are_clear(server: ServerProc, tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    home = str(tmp_path / "home")
    done = run_orc("lock", "status", "T-1", "--json", cwd=repo,
                   env={"ORC_HOME": home, "ORC_MODE": "team", "ORC_TEAM_TOKEN": "x"})
    assert done.returncode == 3
    assert json.loads(done.stdout)["error"]["code"] == "CONFIG_ERROR"
    assert "team.server_url" in done.stdout
    forged = token("alice", secret="other-secret-" + "y" * 40)
    done = run_orc("lock", "acquire", "T-1", "--json", cwd=repo, env={
        "ORC_HOME": home, "ORC_MODE": "team", "ORC_TEAM_URL": f"ws://{server.base}",
        "ORC_TEAM_TOKEN": forged})
    assert done.returncode == 3, done.stderr  # a refused token is not a reason to fall back
    assert "refused the token" in json.loads(done.stdout)["error"]["message"]
    assert not (repo / ".orc" / "tasks" / "T-1" / "lock.yaml").exists()


def test_orc_lock_acquire_waits_for_the_holder(server: ServerProc, tmp_path: Path,
                                               make_locker: LockerFactory) -> None:
    repo = git_repo(tmp_path / "repo")
    url = f"ws://{server.base}"
    task = unique()
    bob = make_locker(server, "bob")
    bob.acquire(task)
    code, out = orc_json("lock", "acquire", task, "--timeout", "0.3", repo=repo, url=url)
    assert code == 124 and out["error"]["code"] == "TIMEOUT"
    env = {"ORC_HOME": str(tmp_path / "home"), "ORC_MODE": "team", "ORC_TEAM_URL": url,
           "ORC_TEAM_TOKEN": token("alice")}
    waiting = subprocess.Popen([sys.executable, "-m", "orc_git", "lock", "acquire", task,
                                "--wait", "--timeout", "20", "--json"], cwd=repo,
                               env={**os.environ, **env}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        bob.release(task)  # whether alice is waiting yet or not, she gets it next
        stdout, stderr = waiting.communicate(timeout=30)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 0, stderr
    assert json.loads(stdout)["lock"]["token"] == 2


def test_hold_in_team_mode(server: ServerProc, team_context: Any) -> None:
    import orc_git

    ctx = team_context(server, "alice")
    task = unique()
    with orc_git.hold(task, context=ctx, ttl=30) as lease:
        assert lease.token == 1
        assert server.http(f"/api/locks/{task}", token("carol"))[1]["lock"]["owner"] == "alice"
        lease.check()
    assert server.http(f"/api/locks/{task}", token("carol"))[1]["locked"] is False


def test_same_user_same_host_may_renew_and_release_from_another_shell(
        server: ServerProc, tmp_path: Path) -> None:
    """As with file leases, `orc lock heartbeat/release` from another process of the same user
    on the same host act as the holder; the holder on the server stays the acquiring process."""
    repo = git_repo(tmp_path / "repo")
    url = f"ws://{server.base}"
    task = unique()
    assert orc_json("lock", "acquire", task, repo=repo, url=url)[0] == 0
    holder = server.http(f"/api/locks/{task}", token("carol"))[1]["lock"]["client"]
    env = {**os.environ, "ORC_HOME": str(tmp_path / "home"), "ORC_MODE": "team",
           "ORC_TEAM_URL": url, "ORC_TEAM_TOKEN": token("alice")}

    def from_a_shell(*args: str) -> subprocess.CompletedProcess[str]:
        line = " ".join([f'"{sys.executable}"', "-m", "orc_git", *args, "--json"])
        return subprocess.run(["sh", "-c", line], cwd=repo, env=env, text=True,
                              capture_output=True, timeout=30)

    done = from_a_shell("lock", "heartbeat", task)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["lock"]["token"] == 1
    assert server.http(f"/api/locks/{task}", token("carol"))[1]["lock"]["client"] == holder
    done = from_a_shell("lock", "release", task)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["released"] is True

    code, _ = orc_json("lock", "acquire", task, repo=repo, url=url, user="bob")
    assert code == 0
    done = from_a_shell("lock", "release", task)  # bob's: not alice's to release
    assert done.returncode == 1 and json.loads(done.stdout)["error"]["code"] == "NOT_OWNER"


# -- lock domains: a server's tokens are compared only with that server's ----------------------


def test_lock_results_carry_the_servers_lock_domain(start_server: ServerFactory,
                                                    make_locker: LockerFactory) -> None:
    one, two = start_server(), start_server()
    task = unique()
    first = make_locker(one, "alice").acquire(task)
    assert first.lock_domain and first.lock_domain == one.http(
        f"/api/locks/{task}", token("carol"))[1]["lock"]["lock_domain"]
    assert one.http("/api/locks/NOBODY-1", token("carol"))[1]["lock_domain"] == first.lock_domain
    assert make_locker(two, "alice").acquire(task).lock_domain not in (None, first.lock_domain)
    one.stop()
    two.stop()


def test_a_state_from_another_servers_domain_does_not_refuse_a_holder(
        start_server: ServerFactory, team_context: Any) -> None:
    import orc_git
    from orc_git.errors import StaleToken
    from orc_git.state import create_task, read_state, write_state

    server_a, server_b = start_server(), start_server()
    task = unique()
    ctx_a = team_context(server_a, "alice")
    create_task(ctx_a, task)
    for _ in range(3):
        with orc_git.hold(task, context=ctx_a) as lease:
            pass
    with orc_git.hold(task, context=ctx_a) as lease:
        assert lease.token == 4
        recorded = write_state(ctx_a, task, status="running", token=lease.token,
                               lock_domain=lease.domain)
    assert recorded.lock_domain == lease.domain and recorded.lock_domain is not None

    ctx_b = team_context(server_b, "alice")
    with orc_git.hold(task, context=ctx_b) as first:
        assert first.token == 1 and first.domain not in (None, recorded.lock_domain)
        state = write_state(ctx_b, task, phase="on B", token=first.token,
                            lock_domain=first.domain)  # was STALE_TOKEN
        assert (state.token, state.lock_domain) == (1, first.domain)
    with orc_git.hold(task, context=ctx_b) as second:
        write_state(ctx_b, task, phase="B's second", token=second.token,
                    lock_domain=second.domain)
    with pytest.raises(StaleToken):  # the same server's older token is still refused
        write_state(ctx_b, task, phase="stale", token=first.token, lock_domain=first.domain)
    assert read_state(ctx_b.repo.tasks_dir, task).phase == "B's second"  # type: ignore[union-attr]
    server_a.stop()
    server_b.stop()


def test_orc_task_state_in_team_mode_records_the_servers_domain(
        start_server: ServerFactory, tmp_path: Path) -> None:
    server_a, server_b = start_server(), start_server()
    repo = git_repo(tmp_path / "repo")
    task = unique()
    url_a, url_b = f"ws://{server_a.base}", f"ws://{server_b.base}"
    assert orc_json("task", "new", task, repo=repo, url=url_a)[0] == 0
    for _ in range(2):
        assert orc_json("lock", "acquire", task, repo=repo, url=url_a)[0] == 0
        assert orc_json("lock", "release", task, repo=repo, url=url_a)[0] == 0
    assert orc_json("lock", "acquire", task, repo=repo, url=url_a)[0] == 0  # token 3
    code, out = orc_json("task", "state", task, "--status", "running", repo=repo, url=url_a)
    assert code == 0 and out["state"]["token"] == 3, out
    domain_a = out["state"]["lock_domain"]
    assert domain_a == server_a.http(f"/api/locks/{task}", token("carol"))[1]["lock_domain"]
    assert orc_json("lock", "release", task, repo=repo, url=url_a)[0] == 0

    assert orc_json("lock", "acquire", task, repo=repo, url=url_b)[0] == 0  # token 1 on B
    code, out = orc_json("task", "state", task, "--phase", "on B", repo=repo, url=url_b)
    assert code == 0 and out["state"]["token"] == 1, out
    assert out["state"]["lock_domain"] not in (None, domain_a)
    assert orc_json("lock", "release", task, repo=repo, url=url_b)[0] == 0
    server_a.stop()
    server_b.stop()


def test_the_file_lease_fallback_records_the_clones_domain(team_context: Any) -> None:
    import orc_git
    from orc_git.state import create_task, write_state

    from conftest import dead_url

    ctx = team_context(dead_url(), "alice")
    task = unique()
    create_task(ctx, task)
    with orc_git.hold(task, context=ctx) as lease:
        clone = (ctx.repo.local_dir / "lock-domain").read_text().strip()
        assert lease.domain == clone
        state = write_state(ctx, task, status="running", token=lease.token,
                            lock_domain=lease.domain)
    assert state.lock_domain == clone
