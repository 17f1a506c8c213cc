"""``orc lock`` acquire, release, heartbeat, status, list, wait and clean through the real CLI:
exit statuses, the ``--json`` contract, and who holds a lease taken with ``orc lock acquire``."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from conftest import (
    identity_env,
    leased,
    lock_path,
    orc,
    orc_elsewhere,
    orc_json,
)
from lockcli import (
    check_lock,
    hold_here,
    on_disk,
    one_json,
    release_here,
    tty_orc,
)

from orc_git.context import Context
from orc_git.locking import lockyaml
from orc_git.locking.info import LockInfo, parse_rfc3339

# -- acquire -------------------------------------------------------------------------------

def test_acquire_json_shape_and_lease_belongs_to_the_caller(repo: Path) -> None:
    proc = orc("lock", "acquire", "TASK-AM-001", "--ttl", "30", "--json", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    out = one_json(proc)
    assert out["mode"] == "p2p"
    assert out["acquired"] is True
    assert "error" not in out
    lock = check_lock(out["lock"])
    assert lock["task_id"] == "TASK-AM-001"
    assert lock["locked"] is True and lock["stale"] is False and lock["mine"] is True
    assert lock["pid"] == os.getpid()  # the calling process, not the short-lived `orc`
    assert lock["user"] == "alice" and lock["owner"] == f"alice@{lock['host']}"
    assert lock["ttl"] == 30 and lock["token"] == 1
    beat, expires = parse_rfc3339(lock["heartbeat_at"]), parse_rfc3339(lock["expires_at"])
    assert beat is not None and expires == beat + 30
    disk = on_disk(repo, "TASK-AM-001")
    assert (disk.pid, disk.token, disk.ttl) == (os.getpid(), 1, 30)


def test_acquire_prints_the_token_on_stdout_and_narrates_on_stderr(repo: Path) -> None:
    proc = orc("lock", "acquire", "T", cwd=repo)
    assert proc.returncode == 0
    assert proc.stdout == "1\n"
    assert "acquired T" in proc.stderr


def test_second_acquire_from_the_same_parent_renews(repo: Path) -> None:
    first = hold_here(repo, "T")
    second = hold_here(repo, "T")
    assert second["token"] == first["token"] == 1
    assert second["acquired_at"] == first["acquired_at"]


def test_conflict_is_refused_with_the_holder_in_json(repo: Path) -> None:
    hold_here(repo, "T")
    before = lock_path(repo, "T").read_bytes()
    proc = orc_elsewhere("lock", "acquire", "T", "--json", cwd=repo)
    assert proc.returncode == 1
    out = one_json(proc)
    assert out["mode"] == "p2p"
    assert out["error"]["code"] == "LOCK_HELD"
    holder = check_lock(out["lock"])
    assert holder["locked"] is True and holder["pid"] == os.getpid()
    assert holder["user"] == "alice" and holder["token"] == 1
    assert lock_path(repo, "T").read_bytes() == before


def test_conflict_without_a_tty_never_prompts(repo: Path) -> None:
    hold_here(repo, "T")
    before = lock_path(repo, "T").read_bytes()
    # An answer waiting on stdin must not be taken as consent: stdin is not a terminal.
    proc = orc_elsewhere("lock", "acquire", "T", cwd=repo, input="2\n")
    assert proc.returncode == 1
    assert "Your choice" not in proc.stderr
    assert "alice" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert lock_path(repo, "T").read_bytes() == before


def test_acquire_timeout_on_a_held_lock_exits_124(repo: Path) -> None:
    hold_here(repo, "T")
    before = lock_path(repo, "T").read_bytes()
    started = time.monotonic()
    proc = orc_elsewhere("lock", "acquire", "T", "--timeout", "0.5", "--json", cwd=repo)
    elapsed = time.monotonic() - started
    assert proc.returncode == 124
    assert one_json(proc)["error"]["code"] == "TIMEOUT"
    assert 0.5 <= elapsed < 30
    assert lock_path(repo, "T").read_bytes() == before


def test_acquire_wait_succeeds_once_the_holder_releases(repo: Path) -> None:
    hold_here(repo, "T")
    with tty_orc("lock", "acquire", "T", "--wait", cwd=repo) as (proc, tty):
        tty.until("waiting for T")  # it found the lease held and is waiting
        release_here(repo, "T")
        assert proc.wait(30) == 0
        assert proc.stdout is not None
        assert proc.stdout.read().decode().strip() == "2"  # the next fencing token
    disk = on_disk(repo, "T")
    assert disk.token == 2 and disk.pid == proc.pid  # the wrapper: the acquirer's parent
    assert disk.stolen_from is None


def test_force_acquire_and_steal_record_stolen_and_status_shows_the_new_owner(
        repo: Path, tmp_path: Path) -> None:
    hold_here(repo, "T")
    bob = identity_env(tmp_path, "bob")
    proc = orc_elsewhere("lock", "steal", "T", "--json", cwd=repo, env=bob)
    assert proc.returncode == 0, proc.stderr
    out = one_json(proc)
    assert out["acquired"] is True
    lock = check_lock(out["lock"])
    assert lock["user"] == "bob" and lock["owner"].startswith("bob@") and lock["token"] == 2
    disk = on_disk(repo, "T")
    assert disk.stolen_from is not None and disk.stolen_from.startswith("alice@")
    assert disk.user == "bob"

    code, status = orc_json("lock", "status", "T", cwd=repo)
    assert code == 0
    now = check_lock(status["lock"])
    assert now["user"] == "bob" and now["token"] == 2 and now["mine"] is False
    human = orc("lock", "status", "T", cwd=repo)
    assert "Stolen from: alice@" in human.stdout

    # The former holder can neither renew nor release the thief's lease.
    proc = orc("lock", "heartbeat", "T", "--json", cwd=repo)
    assert proc.returncode == 1
    assert one_json(proc)["error"]["code"] == "NOT_OWNER"


def test_acquire_force_from_the_same_user_records_stolen(repo: Path) -> None:
    hold_here(repo, "T")
    proc = orc_elsewhere("lock", "acquire", "T", "--force", "--json", cwd=repo)
    assert proc.returncode == 0
    assert one_json(proc)["lock"]["token"] == 2
    assert on_disk(repo, "T").stolen_from is not None


# -- release and heartbeat -----------------------------------------------------------------

def test_release_by_a_non_owner_is_refused_unless_forced(repo: Path, tmp_path: Path) -> None:
    hold_here(repo, "T")
    bob = identity_env(tmp_path, "bob")
    proc = orc_elsewhere("lock", "release", "T", "--json", cwd=repo, env=bob)
    assert proc.returncode == 1
    out = one_json(proc)
    assert out["error"]["code"] == "NOT_OWNER"
    assert check_lock(out["lock"])["user"] == "alice"
    assert leased(repo, "T")

    proc = orc_elsewhere("lock", "release", "T", "--force", "--json", cwd=repo, env=bob)
    assert proc.returncode == 0, proc.stderr
    out = one_json(proc)
    assert out["released"] is True
    assert check_lock(out["lock"])["user"] == "alice"  # what was released
    assert not leased(repo, "T")


def test_the_same_user_may_release_from_another_process(repo: Path) -> None:
    hold_here(repo, "T")
    proc = orc_elsewhere("lock", "release", "T", "--json", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert one_json(proc)["released"] is True
    assert not leased(repo, "T")


def test_release_of_a_free_task_says_so(repo: Path) -> None:
    code, out = orc_json("lock", "release", "T", cwd=repo)
    assert code == 0
    assert out["released"] is False
    assert check_lock(out["lock"])["locked"] is False


def test_heartbeat_renews_own_lease_and_refuses_others(repo: Path, tmp_path: Path) -> None:
    hold_here(repo, "T")
    before = os.stat(lock_path(repo, "T")).st_ino
    code, out = orc_json("lock", "heartbeat", "T", cwd=repo)
    assert code == 0
    assert check_lock(out["lock"])["token"] == 1
    assert os.stat(lock_path(repo, "T")).st_ino != before  # rewritten

    proc = orc_elsewhere("lock", "heartbeat", "T", "--json", cwd=repo,
                         env=identity_env(tmp_path, "bob"))
    assert proc.returncode == 1
    assert one_json(proc)["error"]["code"] == "NOT_OWNER"

    code, out = orc_json("lock", "heartbeat", "FREE", cwd=repo)
    assert code == 1
    assert out["error"]["code"] == "NOT_OWNER"


# -- status, list, wait, clean -------------------------------------------------------------

def test_status_of_a_free_and_a_held_task(repo: Path) -> None:
    code, out = orc_json("lock", "status", "T", cwd=repo)
    assert code == 0
    assert out["mode"] == "p2p"
    free = check_lock(out["lock"])
    assert free["task_id"] == "T" and free["locked"] is False
    assert orc("lock", "status", "T", cwd=repo).stdout == "T: not locked\n"

    hold_here(repo, "T")
    code, out = orc_json("lock", "status", "T", cwd=repo)
    held = check_lock(out["lock"])
    assert held["locked"] is True and held["mine"] is True and held["pid"] == os.getpid()
    text = orc("lock", "status", "T", cwd=repo).stdout
    assert "Locked by: Alice Martinez (alice@" in text
    assert "Started:" in text and "Last activity:" in text


def test_status_of_another_users_lease_is_not_mine(repo: Path, tmp_path: Path) -> None:
    hold_here(repo, "T")
    proc = orc("lock", "status", "T", "--json", cwd=repo, env=identity_env(tmp_path, "bob"))
    assert check_lock(one_json(proc)["lock"])["mine"] is False


def test_list_and_list_stale(repo: Path) -> None:
    code, out = orc_json("lock", "list", cwd=repo)
    assert (code, out["locks"]) == (0, [])

    hold_here(repo, "A-LIVE")
    proc = orc_elsewhere("lock", "acquire", "B-DEAD", cwd=repo)  # its holder exits at once
    assert proc.returncode == 0

    code, out = orc_json("lock", "list", cwd=repo)
    assert code == 0
    locks = [check_lock(lock) for lock in out["locks"]]
    assert [lock["task_id"] for lock in locks] == ["A-LIVE", "B-DEAD"]
    assert locks[0]["stale"] is False
    assert locks[1]["stale"] is True and locks[1]["stale_reason"] == "holder-dead"

    code, out = orc_json("lock", "list", "--stale", cwd=repo)
    assert code == 0
    assert [lock["task_id"] for lock in out["locks"]] == ["B-DEAD"]

    text = orc("lock", "list", cwd=repo).stdout.splitlines()
    assert len(text) == 2
    assert text[0].split("\t")[:2] == ["A-LIVE", "held"]
    assert text[1].split("\t")[:2] == ["B-DEAD", "stale:holder-dead"]


def test_wait_returns_promptly_after_the_holder_releases(repo: Path) -> None:
    hold_here(repo, "T")
    with tty_orc("lock", "wait", "T", cwd=repo, other_parent=False) as (proc, tty):
        tty.until("waiting for T")
        assert proc.poll() is None
        released = time.monotonic()
        release_here(repo, "T")
        assert proc.wait(30) == 0
        assert time.monotonic() - released < 5
        assert "T is free" in tty.rest()


def test_wait_json_free_stale_and_timeout(repo: Path) -> None:
    code, out = orc_json("lock", "wait", "T", "--timeout", "5", cwd=repo)
    assert code == 0
    assert check_lock(out["lock"])["locked"] is False

    assert orc_elsewhere("lock", "acquire", "DEAD", cwd=repo).returncode == 0
    code, out = orc_json("lock", "wait", "DEAD", "--timeout", "30", cwd=repo)
    assert code == 0
    assert check_lock(out["lock"])["stale_reason"] == "holder-dead"

    hold_here(repo, "T")
    started = time.monotonic()
    code, out = orc_json("lock", "wait", "T", "--timeout", "0.3", cwd=repo)
    assert code == 124
    assert out["error"]["code"] == "TIMEOUT"
    assert time.monotonic() - started >= 0.3


def test_clean_removes_the_lease_of_a_dead_holder(ctx: Context, repo: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        ctx.file_locker(pid=sleeper.pid).acquire("DEAD")
        hold_here(repo, "LIVE")
        code, out = orc_json("lock", "status", "DEAD", cwd=repo)
        assert out["lock"]["locked"] is True and out["lock"]["stale"] is False
        assert out["lock"]["pid"] == sleeper.pid
        code, out = orc_json("lock", "clean", cwd=repo)
        assert (code, out["removed"]) == (0, [])  # nothing stale yet
        assert leased(repo, "DEAD")
    finally:
        sleeper.kill()
        sleeper.wait(10)

    code, out = orc_json("lock", "status", "DEAD", cwd=repo)
    assert out["lock"]["stale_reason"] == "holder-dead"
    code, out = orc_json("lock", "clean", cwd=repo)
    assert code == 0
    removed = [check_lock(lock) for lock in out["removed"]]
    assert [(r["task_id"], r["stale_reason"]) for r in removed] == [("DEAD", "holder-dead")]
    assert not leased(repo, "DEAD")
    assert leased(repo, "LIVE")
    code, out = orc_json("lock", "clean", cwd=repo)
    assert (code, out["removed"]) == (0, [])


def test_unreadable_lease_is_stale_and_can_be_cleaned(repo: Path) -> None:
    path = lock_path(repo, "BAD")
    path.parent.mkdir(parents=True)
    path.write_text("{{{ not a lease")
    code, out = orc_json("lock", "status", "BAD", cwd=repo)
    assert code == 0
    lock = check_lock(out["lock"])
    assert lock["locked"] is True and lock["stale_reason"] == "unreadable"
    code, out = orc_json("lock", "list", "--stale", cwd=repo)
    assert [lock["stale_reason"] for lock in out["locks"]] == ["unreadable"]
    code, out = orc_json("lock", "clean", cwd=repo)
    assert [lock["task_id"] for lock in out["removed"]] == ["BAD"]
    assert not path.exists()


def test_lease_not_renewed_within_its_ttl_is_expired_and_taken_over(repo: Path) -> None:
    # A holder on another machine (its pid cannot be judged here) that stopped renewing.
    path = lock_path(repo, "OLD")
    path.parent.mkdir(parents=True)
    remote = LockInfo("OLD", locked=True, owner="carol@elsewhere", user="carol",
                      host="elsewhere", pid=4242, pid_started=1.0, host_id="elsewhere/1/1",
                      acquired_at="2024-01-01T00:00:00Z", heartbeat_at="2024-01-01T00:00:00Z",
                      ttl=5, token=7)
    path.write_bytes(lockyaml.render(remote))
    code, out = orc_json("lock", "status", "OLD", cwd=repo)
    assert out["lock"]["stale"] is False  # just written: the file's age is what counts
    old = time.time() - 60
    os.utime(path, (old, old))
    code, out = orc_json("lock", "status", "OLD", cwd=repo)
    assert code == 0
    assert check_lock(out["lock"])["stale_reason"] == "expired"
    assert out["lock"]["user"] == "carol"
    lock = hold_here(repo, "OLD")
    assert lock["token"] == 8  # fencing tokens keep increasing past the old holder's
    assert on_disk(repo, "OLD").stolen_from is None  # a takeover, not a theft
