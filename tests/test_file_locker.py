"""FileLocker against real processes: races, kill -9, SIGSTOP past the TTL, fencing, worktrees."""

from __future__ import annotations

import collections
import fcntl
import multiprocessing
import os
import re
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import HolderProcess, git, leased, lock_path, make_repo, orc_json, wait_for

from orc_git import hookimpl
from orc_git.context import Context
from orc_git.errors import LeaseLost, LockHeld, NotOwner
from orc_git.locking import lockio, lockyaml
from orc_git.locking.info import LockEvent

RACERS = 8
ROUNDS = 40


def _racer(repo: str, rounds: int, start: Any, results: Any) -> None:
    """Acquire the one task ``rounds`` times; inside, prove nobody else is inside."""
    locker = Context.discover(repo).locker()
    marker = Path(repo) / "critical-section"
    tokens, overlaps = [], 0
    start.wait()
    while len(tokens) < rounds:
        try:
            info = locker.acquire("RACE")
        except LockHeld:
            continue
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            overlaps += 1
        else:
            os.close(fd)
            os.unlink(marker)
        tokens.append(info.token)
        assert locker.release("RACE")
    results.put((os.getpid(), tokens, overlaps))


@pytest.mark.slow
def test_eight_processes_racing_never_overlap(repo: Path) -> None:
    mp = multiprocessing.get_context("spawn")
    start = mp.Event()
    results = mp.Queue()
    procs = [mp.Process(target=_racer, args=(str(repo), ROUNDS, start, results))
             for _ in range(RACERS)]
    for p in procs:
        p.start()
    start.set()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sum(o[2] for o in outcomes) == 0
    tokens = [t for o in outcomes for t in o[1]]
    assert len(tokens) == RACERS * ROUNDS
    assert len(set(tokens)) == len(tokens), "a fencing token was granted twice"
    for _, own, _ in outcomes:
        assert own == sorted(own), "tokens must increase with every grant"
    assert not leased(repo, "RACE")


def _cycler(repo: str, rounds: int, start: Any, results: Any) -> None:
    """Grant and release the one task ``rounds`` times, as fast as it goes."""
    locker = Context.discover(repo).locker()
    start.wait()
    done = 0
    while done < rounds:
        try:
            info = locker.acquire("TORN")
        except LockHeld:
            continue
        assert locker.release("TORN")
        done += 1
    results.put((info.pid, info.pid_started))


@pytest.mark.slow
def test_lock_free_readers_never_see_a_lease_mixed_from_two(repo: Path) -> None:
    """Two processes grant over each other's tombstones in place while this one reads without
    the guard: every lease it reads is one process's whole lease, never half of each."""
    mp = multiprocessing.get_context("spawn")
    start, results = mp.Event(), mp.Queue()
    procs = [mp.Process(target=_cycler, args=(str(repo), 3000, start, results)) for _ in range(2)]
    for p in procs:
        p.start()
    task_dir = str(lock_path(repo, "TORN").parent)
    seen: collections.Counter[tuple[int | None, float | None]] = collections.Counter()
    newest = released = 0  # the newest token read, and the newest one read as released since
    revived = []
    start.set()
    while any(p.is_alive() for p in procs):
        info = lockio.read(task_dir, "TORN")
        if info is None:
            released = newest
        elif info.stale_reason != "unreadable":
            seen[(info.pid, info.pid_started)] += 1
            token = info.token or 0
            if token <= released:
                revived.append(token)  # a released lease read as live again
            newest = max(newest, token)
    holders = {results.get(timeout=60) for _ in procs}
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(holders) == 2 and sum(seen.values()) > 0
    assert set(seen) <= holders, f"mixed leases read: {set(seen) - holders}"
    assert not revived, f"released leases read as held again: tokens {revived[:10]}"


class Recorder:
    def __init__(self) -> None:
        self.events: list[LockEvent] = []

    @hookimpl
    def orc_git_lock_event(self, event: LockEvent) -> None:
        self.events.append(event)


def recorded(ctx: Context) -> Recorder:
    rec = Recorder()
    ctx.plugins.manager.register(rec)
    return rec


def test_fencing_token_increases_across_grants_and_processes(ctx: Context, repo: Path) -> None:
    locker = ctx.locker()
    tokens = []
    for _ in range(3):
        tokens.append(locker.acquire("T").token)
        locker.release("T")
    other = Context.discover(repo).file_locker()  # another locker, same holder process
    tokens.append(other.acquire("T").token)
    other.release("T")
    assert tokens == [1, 2, 3, 4]
    assert (lock_path(repo, "T").parent / "lock.fence").stat().st_size == 4


def test_kill_9_holder_is_taken_over_at_once(ctx: Context, repo: Path,
                                             holders: list[HolderProcess],
                                             caplog: pytest.LogCaptureFixture) -> None:
    holder = HolderProcess(repo, "T")
    holders.append(holder)
    locker = ctx.locker()
    with pytest.raises(LockHeld) as exc:
        locker.acquire("T")
    assert exc.value.lock is not None and exc.value.lock.pid == holder.pid
    rec = recorded(ctx)
    os.kill(holder.pid, signal.SIGKILL)
    holder.proc.wait(10)
    info = locker.acquire("T")  # no waiting: a dead holder on this host is stale at once
    assert info.token == holder.token + 1
    assert [e.kind for e in rec.events] == ["holder-dead", "acquired"]
    assert rec.events[0].previous is not None and rec.events[0].previous.pid == holder.pid
    assert "took over a stale lease (holder-dead" in caplog.text
    locker.release("T")


def test_reused_pid_is_not_mistaken_for_the_holder(ctx: Context, repo: Path) -> None:
    """A lease naming a live PID with another start time belongs to a dead process."""
    locker = ctx.locker()
    info = locker.acquire("T")
    path = lock_path(repo, "T")
    text = path.read_text().replace(f"pid_started: {info.pid_started}", "pid_started: 1000.0")
    locker.release("T")
    path.write_text(text)
    assert ctx.locker().is_locked("T").stale_reason == "holder-dead"


@pytest.mark.slow
def test_stopped_holder_loses_lease_and_is_told_when_resumed(repo: Path,
                                                             holders: list[HolderProcess]) -> None:
    holder = HolderProcess(repo, "T", ttl=2)
    holders.append(holder)
    ctx = Context.discover(repo)
    locker = ctx.locker()
    os.kill(holder.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: locker.is_locked("T").stale, timeout=20, what="the lease to expire")
        assert locker.is_locked("T").stale_reason == "expired"  # alive, but silent past its TTL
        mine = locker.acquire("T", ttl=60)
        before = lock_path(repo, "T").read_bytes()
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    line = holder.expect("lost")
    assert "taken over" in line and f"token {mine.token}" in line
    holder.tell("release")
    assert holder.expect("released") == "released False"
    assert lock_path(repo, "T").read_bytes() == before, "the former holder touched our lease"
    assert locker.heartbeat("T").token == mine.token
    assert locker.release("T")


def test_former_holder_cannot_release_or_renew_successor(ctx: Context, repo: Path) -> None:
    locker = ctx.locker()
    first = locker.acquire("T", ttl=60)
    path = lock_path(repo, "T")
    # Simulate the successor the way a takeover writes: a new file renamed over the lease.
    successor = lockyaml.parse(path.read_bytes(), "T").with_(token=first.token + 5,
                                                               pid=1, pid_started=1.0)
    path.with_name("successor").write_bytes(lockyaml.render(successor))
    os.replace(path.with_name("successor"), path)
    with pytest.raises(LeaseLost, match="taken over"):
        locker.heartbeat("T")
    with pytest.raises(NotOwner):
        locker.release("T")
    assert lockyaml.parse(path.read_bytes(), "T").token == first.token + 5


def test_former_holder_cannot_release_a_successor_written_in_place(ctx: Context,
                                                                  repo: Path) -> None:
    """Same inode, same size, maybe the same mtime tick: only the bytes tell the leases apart."""
    locker = ctx.locker()
    first = locker.acquire("T", ttl=60)
    path = lock_path(repo, "T")
    mine = path.read_bytes()
    successor = mine.replace(b"token: %d" % first.token, b"token: %d" % (first.token + 1))
    assert len(successor) == len(mine) and successor != mine
    inode = path.stat().st_ino
    with open(path, "r+b") as f:  # in place, as a grant over a tombstone writes
        f.write(successor)
    assert path.stat().st_ino == inode
    assert locker.release("T") is False  # told (a warning), and hands off
    assert path.read_bytes() == successor


def test_release_leaves_a_tombstone_that_the_next_grant_reuses(ctx: Context,
                                                               repo: Path) -> None:
    locker = ctx.locker()
    path = lock_path(repo, "T")
    first = locker.acquire("T")
    inode = path.stat().st_ino
    assert locker.release("T")
    released = path.read_bytes()
    assert released.startswith(b"released: true \n") and not leased(repo, "T")
    assert lockyaml.parse(released, "T").token == first.token  # the last lease, on record
    assert not locker.is_locked("T").locked and locker.list_locks() == []
    second = locker.acquire("T")
    assert second.token == first.token + 1
    assert path.stat().st_ino == inode, "the grant wrote over the tombstone in place"
    assert lockyaml.parse(path.read_bytes(), "T").token == second.token
    assert locker.release("T")


def test_a_tombstone_is_free_to_other_processes_and_force(ctx: Context, repo: Path) -> None:
    locker = ctx.locker()
    locker.acquire("T")
    locker.release("T")
    code, out = orc_json("lock", "status", "T", cwd=repo)
    assert code == 0 and out["lock"]["locked"] is False
    code, out = orc_json("lock", "acquire", "T", cwd=repo)
    assert code == 0 and out["lock"]["token"] == 2 and "stolen_from" not in out["lock"]
    code, out = orc_json("lock", "release", "T", cwd=repo)
    assert code == 0 and out["released"] is True
    assert locker.acquire("T", force=True).stolen_from is None  # nothing to steal
    assert locker.release("T")


def test_a_half_written_lease_is_read_again_under_the_guard(ctx: Context, repo: Path) -> None:
    """A lock-free reader can catch a grant's in-place write half done.  Held under the guard,
    such bytes are what a reader may see; once the writer is done, the reader sees the lease."""
    locker = ctx.locker()
    lease = locker.acquire("T")
    path = lock_path(repo, "T")
    whole = path.read_bytes()
    guard = os.open(path.with_name("lock.fence"), os.O_RDWR)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        path.write_bytes(whole[: len(whole) // 2])  # the writer, caught half way

        def finish() -> None:
            path.write_bytes(whole)
            fcntl.flock(guard, fcntl.LOCK_UN)

        timer = threading.Timer(0.2, finish)
        timer.start()
        seen = ctx.file_locker().is_locked("T")  # another locker: not our own held lease
        timer.join()
    finally:
        os.close(guard)
    assert seen.locked and not seen.stale and seen.token == lease.token
    assert locker.release("T")


def test_second_process_of_same_user_is_another_holder(ctx: Context, repo: Path,
                                                       holders: list[HolderProcess]) -> None:
    holders.append(HolderProcess(repo, "T"))
    with pytest.raises(LockHeld, match="locked by Alice Martinez"):
        ctx.locker().acquire("T")


def test_same_process_reacquire_is_refused_in_process(ctx: Context) -> None:
    locker = ctx.locker()
    locker.acquire("T")
    with pytest.raises(LockHeld, match="already held by this process"):
        locker.acquire("T")
    locker.release("T")


def test_force_records_stolen(ctx: Context, repo: Path, holders: list[HolderProcess]) -> None:
    holder = HolderProcess(repo, "T")
    holders.append(holder)
    rec = recorded(ctx)
    info = ctx.locker().acquire("T", force=True)
    assert info.stolen_from == "alice@" + info.host
    assert [e.kind for e in rec.events] == ["stolen", "acquired"]
    ctx.locker().release("T")


def test_worktrees_share_leases(repo: Path, tmp_path: Path) -> None:
    git("add", "-A", cwd=repo)  # .orc/shared/ travels with the branch into the worktree
    git("commit", "-qm", "init", cwd=repo)
    wt = tmp_path / "wt"
    git("worktree", "add", "-q", str(wt), cwd=repo)
    main_locker = Context.discover(repo).locker()
    wt_ctx = Context.discover(wt)
    assert wt_ctx.repo.lock_root == repo / ".orc" / "tasks"
    main_locker.acquire("T")
    seen = wt_ctx.locker().is_locked("T")
    assert seen.locked and seen.pid == os.getpid()
    main_locker.release("T")
    assert not wt_ctx.locker().is_locked("T").locked


def test_foreign_release_needs_ownership(ctx: Context, repo: Path,
                                         holders: list[HolderProcess],
                                         isolated_env: Path) -> None:
    holder = HolderProcess(repo, "T", ttl=3)
    holders.append(holder)
    (isolated_env / "config.yaml").write_text("identity: {user: bob}\n")
    bob = Context.discover(repo).file_locker(pid=os.getppid())
    with pytest.raises(NotOwner):
        bob.release("T")
    assert bob.release("T", force=True)
    assert "removed by someone else" in holder.expect("lost")  # at its next heartbeat
    holder.tell("release")


def test_list_and_clean(ctx: Context, repo: Path, holders: list[HolderProcess]) -> None:
    dead = HolderProcess(repo, "DEAD")
    holders.append(dead)
    holders.append(HolderProcess(repo, "LIVE"))
    os.kill(dead.pid, signal.SIGKILL)
    dead.proc.wait(10)
    rec = recorded(ctx)
    states = {i.task_id: i.stale_reason for i in ctx.locker().list_locks()}
    assert states == {"DEAD": "holder-dead", "LIVE": None}
    removed = ctx.locker().clean()
    assert [i.task_id for i in removed] == ["DEAD"]
    assert [e.kind for e in rec.events] == ["stale"]
    assert not leased(repo, "DEAD") and leased(repo, "LIVE")


def test_new_repo_per_test_is_independent(tmp_path: Path) -> None:
    a = Context.discover(make_repo(tmp_path / "a")).locker()
    b = Context.discover(make_repo(tmp_path / "b")).locker()
    a.acquire("T")
    assert b.acquire("T").token == 1


# -- the clone's lock domain -------------------------------------------------------------------


def _first_grant(repo: str, task: str, start: Any, results: Any) -> None:
    locker = Context.discover(repo).locker()
    start.wait()
    info = locker.acquire(task)
    results.put(info.lock_domain)
    locker.release(task)


def test_racing_first_grants_of_a_clone_agree_on_one_lock_domain(repo: Path) -> None:
    mp = multiprocessing.get_context("spawn")
    start = mp.Event()
    results = mp.Queue()
    procs = [mp.Process(target=_first_grant, args=(str(repo), f"T{i}", start, results))
             for i in range(RACERS)]
    for p in procs:
        p.start()
    start.set()
    domains = {results.get(timeout=120) for _ in procs}
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(domains) == 1
    (domain,) = domains
    assert re.fullmatch(r"[0-9a-f]{32}", domain)
    local = repo / ".orc" / "local"
    assert (local / "lock-domain").read_text() == domain + "\n"
    assert not [n for n in os.listdir(local) if n.endswith(".tmp")]


def test_the_lock_domain_is_shared_by_worktrees_and_never_committed(repo: Path,
                                                                   tmp_path: Path) -> None:
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "init", cwd=repo)
    wt = tmp_path / "wt"
    git("worktree", "add", "-q", str(wt), cwd=repo)
    here = Context.discover(repo).locker().acquire("T")
    there = Context.discover(wt).locker().acquire("U")
    assert here.lock_domain and here.lock_domain == there.lock_domain
    assert (repo / ".orc/local/lock-domain").is_file()
    assert not (wt / ".orc/local").exists()
    git("add", "-A", cwd=repo)
    assert ".orc/local" not in git("status", "--porcelain", cwd=repo)
    git("check-ignore", "-q", ".orc/local/lock-domain", cwd=repo)


def test_a_renewal_and_a_takeover_keep_the_lock_domain(ctx: Context, repo: Path) -> None:
    locker = ctx.locker()
    info = locker.acquire("T")
    assert locker.heartbeat("T").lock_domain == info.lock_domain
    locker.release("T")
    other = Context.discover(repo).file_locker()
    assert other.acquire("T", force=True).lock_domain == info.lock_domain
    other.release("T")


@pytest.mark.parametrize("plant", ["symlink", "fifo", "garbage", "local-symlink"])
def test_a_hostile_lock_domain_file_is_refused(repo: Path, tmp_path: Path, plant: str) -> None:
    local = repo / ".orc" / "local"
    local.mkdir(exist_ok=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "lock-domain").write_text("0123456789abcdef0123456789abcdef\n")
    if plant == "symlink":
        (local / "lock-domain").symlink_to(victim / "lock-domain")
    elif plant == "fifo":
        os.mkfifo(local / "lock-domain")
    elif plant == "garbage":
        (local / "lock-domain").write_text("not an id\n")
    else:
        for name in os.listdir(local):
            os.unlink(local / name)
        local.rmdir()
        local.symlink_to(victim)
    code, out = orc_json("lock", "acquire", "T", cwd=repo, timeout=30)
    assert code == 3 and out["error"]["code"] == "IO_ERROR", out
    assert "lock-domain" in out["error"]["message"] or "local" in out["error"]["message"]
    assert os.listdir(victim) == ["lock-domain"]
    assert not leased(repo, "T")
