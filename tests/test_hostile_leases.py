"""Hostile and broken files met through the real CLI in a real repository.

Whatever sits at ``.orc/tasks/<TASK>/lock.yaml`` (garbage, a bomb, a directory, a symlink out of
the repository), ``orc`` reports it as a stale, unreadable lease, takes it over on acquire (or says
clearly why it cannot), lists and cleans it, never follows it out of the repository and never
shows a traceback.  Staleness comes from the holder process and the file's age on the
filesystem's clock, never from timestamps written inside the file.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import HolderProcess, dead_pid, lock_path, orc, orc_elsewhere, orc_json
from hostile import HOSTILE, assert_no_raw, assert_strict_json

from orc_git.identity import host_id, process_start_time
from orc_git.locking import lockyaml
from orc_git.locking.info import LockInfo

SECRET = b"do not touch: outside the repository\n"


def lease_bytes(task: str, **changes: object) -> bytes:
    info = LockInfo(task_id=task, locked=True, owner="bob@elsewhere", user="bob",
                    host="elsewhere", pid=4242, pid_started=1700000000.0,
                    acquired_at="2024-05-01T10:00:00Z", heartbeat_at="2024-05-01T10:00:30Z",
                    ttl=60, token=5, host_id="elsewhere/1700000000/1")
    return lockyaml.render(info.with_(**changes))


def with_line(task: str, name: str, raw_value: str) -> bytes:
    lines = lease_bytes(task).decode().splitlines()
    out = [f"{name}: {raw_value}" if line.startswith(f"{name}:") else line for line in lines]
    return ("\n".join(out) + "\n").encode()


def billion_laughs() -> bytes:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 12)]
    return ("\n".join(lines) + "\nowner: *l11\n").encode()


Planter = Callable[[Path, str, Path], None]  # (lock.yaml path, task id, outside dir)


def _write(data: bytes | Callable[[str, Path], bytes]) -> Planter:
    def plant(lock: Path, task: str, outside: Path) -> None:
        lock.write_bytes(data(task, outside) if callable(data) else data)

    return plant


def _directory(lock: Path, task: str, outside: Path) -> None:
    lock.mkdir()
    (lock / "inside").write_text("x")


def _symlink_outside(lock: Path, task: str, outside: Path) -> None:
    lock.symlink_to(outside / "secret")


def _symlink_outside_valid(lock: Path, task: str, outside: Path) -> None:
    """The link's target even holds a perfectly good lease for this task: still not followed."""
    (outside / f"lease-{task}").write_bytes(lease_bytes(task))
    lock.symlink_to(outside / f"lease-{task}")


def _dangling(lock: Path, task: str, outside: Path) -> None:
    lock.symlink_to(outside / "does-not-exist")


def _hardlink_outside(lock: Path, task: str, outside: Path) -> None:
    os.link(outside / "secret", lock)


def _fifo(lock: Path, task: str, outside: Path) -> None:
    os.mkfifo(lock)


UNREADABLE: dict[str, Planter] = {
    "empty": _write(b""),
    "whitespace": _write(b" \n\t\n"),
    "truncated": _write(lambda t, o: lease_bytes(t)[: len(lease_bytes(t)) // 2]),
    "garbage": _write(random.Random(20240501).randbytes(4096)),
    "not-utf8": _write(lambda t, o: lease_bytes(t).replace(b"bob@", b"b\xf6b@")),
    "python-tag": _write(lambda t, o: f'!!python/object/apply:os.system ["touch {o}/pwned"]\n'
                         .encode()),
    "python-tag-field": _write(lambda t, o: lease_bytes(t) + f'x: !!python/object/apply:'
                               f'os.system ["touch {o}/pwned"]\n'.encode()),
    "alias-bomb": _write(billion_laughs()),
    "nested-brackets": _write(b"owner: " + b"[" * 20000 + b"]" * 20000 + b"\n"),
    "five-megabytes": _write(lambda t, o: lease_bytes(t) + b"#" * (5 * 1024 * 1024)),
    "a-list": _write(b"- task_id\n- owner\n"),
    "directory": _directory,
    "symlink-outside": _symlink_outside,
    "symlink-outside-valid": _symlink_outside_valid,
    "dangling-symlink": _dangling,
    "hardlink-outside": _hardlink_outside,
    "fifo": _fifo,
    "pid-string": _write(lambda t, o: with_line(t, "pid", '"4242"')),
    "pid-zero": _write(lambda t, o: with_line(t, "pid", "0")),
    "token-bool": _write(lambda t, o: with_line(t, "token", "true")),
    "token-negative": _write(lambda t, o: with_line(t, "token", "-1")),
    "ttl-float": _write(lambda t, o: with_line(t, "ttl", "60.5")),
    "ttl-negative": _write(lambda t, o: with_line(t, "ttl", "-60")),
    "ttl-huge": _write(lambda t, o: with_line(t, "ttl", str(10**12))),
    "pid-started-huge": _write(lambda t, o: with_line(t, "pid_started", "9" * 400)),
    "bad-date": _write(lambda t, o: with_line(t, "heartbeat_at", "2024-02-30")),
    "not-rfc3339": _write(lambda t, o: with_line(t, "heartbeat_at", '"next tuesday"')),
    "other-task": _write(lambda t, o: lease_bytes("SOMEONE-ELSE")),
}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the repository holding a file that must survive untouched."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret").write_bytes(SECRET)
    return d


def plant(repo: Path, task: str, case: str, outside: Path) -> Path:
    lock = lock_path(repo, task)
    lock.parent.mkdir(parents=True, exist_ok=True)
    UNREADABLE[case](lock, task, outside)
    return lock


def assert_outside_untouched(outside: Path) -> None:
    assert (outside / "secret").read_bytes() == SECRET
    assert not (outside / "secret").is_symlink()
    assert not (outside / "pwned").exists()
    assert not (outside / "does-not-exist").exists()


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_status_then_acquire(repo: Path, outside: Path, case: str) -> None:
    task = "T"
    lock = plant(repo, task, case, outside)

    code, out = orc_json("lock", "status", task, cwd=repo, timeout=30)
    assert code == 0, out
    assert out["lock"]["locked"] is True
    assert out["lock"]["stale"] is True
    assert out["lock"]["stale_reason"] == "unreadable"
    assert out["lock"]["token"] is None and out["lock"]["owner"] is None
    assert_outside_untouched(outside)

    proc = orc("lock", "acquire", task, "--json", cwd=repo, timeout=30)
    assert "Traceback" not in proc.stderr, proc.stderr
    out = json.loads(proc.stdout)
    if case == "directory":
        assert proc.returncode == 3, proc.stdout
        assert out["error"]["code"] == "IO_ERROR"
        assert str(lock) in out["error"]["message"]
        assert "directory" in out["error"]["message"]
        assert lock.is_dir() and (lock / "inside").read_text() == "x"  # left for a person
    else:
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        assert out["acquired"] is True
        assert "took over a stale lease (unreadable" in proc.stderr
        # A fresh, regular, readable lease now stands where the hostile file was.
        assert lock.is_file() and not lock.is_symlink()
        assert os.stat(lock).st_nlink == 1
        mine = lockyaml.parse(lock.read_bytes(), task)
        assert mine.token == out["lock"]["token"] and mine.token is not None
        assert mine.pid == os.getpid()  # `orc lock acquire` holds for its caller
        assert not (lock.parent / "lock.yaml.tmp").exists()
    assert_outside_untouched(outside)
    if case == "symlink-outside-valid":
        assert (outside / f"lease-{task}").read_bytes() == lease_bytes(task)


def test_status_text_without_json(repo: Path, outside: Path) -> None:
    plant(repo, "T", "garbage", outside)
    proc = orc("lock", "status", "T", cwd=repo)
    assert proc.returncode == 0
    assert "unreadable" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_list_and_clean_every_case_at_once(repo: Path, outside: Path) -> None:
    tasks = {f"T-{case}": case for case in UNREADABLE if case != "directory"}
    for task, case in tasks.items():
        plant(repo, task, case, outside)
    code, out = orc_json("lock", "acquire", "LIVE", cwd=repo)
    assert code == 0
    live = lock_path(repo, "LIVE").read_bytes()

    code, out = orc_json("lock", "list", cwd=repo, timeout=30)
    assert code == 0
    by_task = {lk["task_id"]: lk for lk in out["locks"]}
    assert set(by_task) == {*tasks, "LIVE"}
    for task in tasks:
        assert by_task[task]["stale"] is True, task
        assert by_task[task]["stale_reason"] == "unreadable", task
    assert by_task["LIVE"]["stale"] is False

    code, out = orc_json("lock", "list", "--stale", cwd=repo, timeout=30)
    assert code == 0
    assert {lk["task_id"] for lk in out["locks"]} == set(tasks)

    code, out = orc_json("lock", "clean", cwd=repo, timeout=30)
    assert code == 0, out
    assert {lk["task_id"] for lk in out["removed"]} == set(tasks)
    for task in tasks:
        assert not os.path.lexists(lock_path(repo, task)), task
    assert lock_path(repo, "LIVE").read_bytes() == live
    assert_outside_untouched(outside)
    assert (outside / "lease-T-symlink-outside-valid").exists()

    code, out = orc_json("lock", "list", cwd=repo)
    assert code == 0
    assert [lk["task_id"] for lk in out["locks"]] == ["LIVE"]


def test_clean_reports_a_directory_it_cannot_remove_and_still_cleans_the_rest(
        repo: Path, outside: Path) -> None:
    dir_lock = plant(repo, "A-DIR", "directory", outside)  # sorts first
    plant(repo, "B-EMPTY", "empty", outside)
    plant(repo, "C-LINK", "symlink-outside", outside)
    proc = orc("lock", "clean", "--json", cwd=repo)
    assert "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)
    assert proc.returncode == 3
    assert out["error"]["code"] == "IO_ERROR"
    assert str(dir_lock) in out["error"]["message"]
    assert "directory" in out["error"]["message"]
    assert dir_lock.is_dir()
    assert not os.path.lexists(lock_path(repo, "B-EMPTY"))
    assert not os.path.lexists(lock_path(repo, "C-LINK"))
    assert_outside_untouched(outside)

    code, out = orc_json("lock", "list", cwd=repo)
    assert code == 0
    assert [lk["task_id"] for lk in out["locks"]] == ["A-DIR"]


# -- staleness never comes from timestamps inside the file ---------------------------------


def test_future_heartbeat_of_a_dead_holder_is_holder_dead(repo: Path) -> None:
    lock = lock_path(repo, "T")
    lock.parent.mkdir(parents=True)
    lock.write_bytes(lease_bytes("T", host_id=host_id(), pid=dead_pid(), pid_started=1.0e9,
                                 acquired_at="2999-01-01T00:00:00Z",
                                 heartbeat_at="2999-12-31T23:59:59Z", ttl=86400))
    code, out = orc_json("lock", "status", "T", cwd=repo)
    assert code == 0
    assert out["lock"]["stale"] is True
    assert out["lock"]["stale_reason"] == "holder-dead"
    assert out["lock"]["expires_at"].startswith("3000-01-01")  # the file's claim, disregarded

    proc = orc("lock", "acquire", "T", "--json", cwd=repo)
    assert proc.returncode == 0, proc.stdout
    assert "took over a stale lease (holder-dead" in proc.stderr
    assert lockyaml.parse(lock.read_bytes(), "T").pid == os.getpid()


def test_future_heartbeat_on_another_host_expires_by_file_age(repo: Path) -> None:
    lock = lock_path(repo, "T")
    lock.parent.mkdir(parents=True)
    lock.write_bytes(lease_bytes("T", heartbeat_at="2999-12-31T23:59:59Z"))
    an_hour_ago = time.time() - 3600
    os.utime(lock, (an_hour_ago, an_hour_ago))
    code, out = orc_json("lock", "status", "T", cwd=repo)
    assert code == 0
    assert out["lock"]["stale"] is True
    assert out["lock"]["stale_reason"] == "expired"
    code, out = orc_json("lock", "acquire", "T", cwd=repo)
    assert code == 0 and out["acquired"] is True


def test_fresh_file_on_another_host_is_held_whatever_its_timestamps_say(repo: Path) -> None:
    lock = lock_path(repo, "T")
    lock.parent.mkdir(parents=True)
    lock.write_bytes(lease_bytes("T", acquired_at="1971-01-01T00:00:00Z",
                                 heartbeat_at="1971-01-01T00:00:00Z"))
    code, out = orc_json("lock", "status", "T", cwd=repo)
    assert code == 0
    assert out["lock"]["locked"] is True and out["lock"]["stale"] is False
    code, out = orc_json("lock", "acquire", "T", cwd=repo)
    assert code == 1
    assert out["error"]["code"] == "LOCK_HELD"
    assert out["lock"]["owner"] == "bob@elsewhere"


def test_live_holder_with_future_heartbeat_goes_stale_when_it_dies(repo: Path) -> None:
    child = subprocess.Popen(["sleep", "60"])
    try:
        started = process_start_time(child.pid)
        assert started is not None
        lock = lock_path(repo, "T")
        lock.parent.mkdir(parents=True)
        lock.write_bytes(lease_bytes("T", host_id=host_id(), pid=child.pid, pid_started=started,
                                     heartbeat_at="2999-12-31T23:59:59Z"))
        code, out = orc_json("lock", "status", "T", cwd=repo)
        assert code == 0 and out["lock"]["stale"] is False
    finally:
        child.kill()
        child.wait()
    code, out = orc_json("lock", "status", "T", cwd=repo)
    assert code == 0
    assert out["lock"]["stale"] is True and out["lock"]["stale_reason"] == "holder-dead"


# -- symlinks elsewhere in the task directory ----------------------------------------------


def test_task_directory_symlinked_outside_is_refused(repo: Path, outside: Path) -> None:
    (repo / ".orc" / "tasks" / "T").symlink_to(outside, target_is_directory=True)
    for command in ("status", "acquire"):
        code, out = orc_json("lock", command, "T", cwd=repo)
        assert code == 3, (command, out)
        assert out["error"]["code"] == "IO_ERROR"
        assert "symbolic link" in out["error"]["message"]
    for command in ("list", "clean"):
        code, out = orc_json("lock", command, cwd=repo)
        assert code == 0
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert_outside_untouched(outside)


def test_fence_symlinked_outside_is_refused(repo: Path, outside: Path) -> None:
    task_dir = repo / ".orc" / "tasks" / "T"
    task_dir.mkdir()
    (task_dir / "lock.fence").symlink_to(outside / "secret")
    code, out = orc_json("lock", "acquire", "T", cwd=repo)
    assert code == 3
    assert out["error"]["code"] == "IO_ERROR"
    assert "symbolic link" in out["error"]["message"]
    assert not (task_dir / "lock.yaml").exists()
    assert_outside_untouched(outside)


def test_planted_temporary_symlink_is_not_written_through(repo: Path, outside: Path) -> None:
    plant(repo, "T", "garbage", outside)
    (repo / ".orc" / "tasks" / "T" / "lock.yaml.tmp").symlink_to(outside / "secret")
    code, out = orc_json("lock", "acquire", "T", cwd=repo)
    assert code == 0
    assert lockyaml.parse(lock_path(repo, "T").read_bytes(), "T").token == out["lock"]["token"]
    assert not os.path.lexists(repo / ".orc" / "tasks" / "T" / "lock.yaml.tmp")
    assert_outside_untouched(outside)


def test_escape_sequences_in_a_lease_never_reach_the_terminal(repo: Path) -> None:
    """A display name that would retitle the terminal and clear the screen is shown escaped."""
    path = lock_path(repo, "T")
    path.parent.mkdir(parents=True)
    path.write_bytes(lease_bytes("T", display_name="Bob\x1b]0;pwned\x07\x1b[2J",
                                 owner="bob\x1b[31m@elsewhere"))
    for args in (("lock", "status", "T"), ("lock", "list"), ("lock", "acquire", "T")):
        proc = orc(*args, cwd=repo)
        shown = proc.stdout + proc.stderr
        assert "\x1b" not in shown and "\x07" not in shown, args
        assert "bob\\x1b[31m@elsewhere" in shown, args


# -- text that cannot be printed or encoded (issue 8, points 4 and 10) -----------------------

def test_surrogates_and_controls_in_a_live_lease_never_crash_a_reader(repo: Path) -> None:
    """A live lease (another host, fresh file) whose every text field holds a lone surrogate,
    a newline, ESC, C1 and bidi controls: shown escaped, valid UTF-8 JSON, never a traceback."""
    lock = lock_path(repo, "T")
    lock.parent.mkdir(parents=True)
    lock.write_bytes(lease_bytes("T", display_name=HOSTILE, owner=HOSTILE + "@elsewhere",
                                 user=HOSTILE, email=HOSTILE, host=HOSTILE))
    for args, code in ((("lock", "status", "T"), 0), (("lock", "list"), 0),
                       (("lock", "acquire", "T"), 1), (("task", "show", "T"), 2)):
        proc = orc(*args, cwd=repo)
        assert proc.returncode == code, (args, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert_no_raw(proc.stdout + proc.stderr)
        if args != ("task", "show", "T"):
            assert "\\ud800x\\n\\x1b[31morc: fake line\\u202e" in proc.stdout + proc.stderr, args
    for args, code in ((("lock", "status", "T"), 0), (("lock", "list"), 0),
                       (("lock", "acquire", "T"), 1)):
        proc = orc(*args, "--json", cwd=repo)
        assert proc.returncode == code and "Traceback" not in proc.stderr, proc.stderr
        proc.stdout.encode("utf-8")
        out = json.loads(proc.stdout)
        assert_strict_json(out)
        lease = out["lock"] if "lock" in out else out["locks"][0]
        assert lease["locked"] is True and lease["stale"] is False
        assert lease["owner"] == "\\ud800x\n\x1b[31morc: fake line\u202e\u2066\x9b@elsewhere"


def test_lease_list_columns_stay_columns(repo: Path) -> None:
    """`orc lock list` is tab-separated: a tab or newline inside a field is escaped, so each
    lease stays one line of six columns."""
    lock = lock_path(repo, "T")
    lock.parent.mkdir(parents=True)
    lock.write_bytes(lease_bytes("T", owner="bob\tfake\ncolumn@elsewhere"))
    proc = orc("lock", "list", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stdout.splitlines()
    assert line.split("\t")[2] == "bob\\tfake\\ncolumn@elsewhere"
    assert len(line.split("\t")) == 6


def test_stdout_that_cannot_encode_a_name_does_not_fail_the_command(repo: Path) -> None:
    lock = lock_path(repo, "T")
    lock.parent.mkdir(parents=True)
    lock.write_bytes(lease_bytes("T", display_name="Zoë 中", owner="zoë@elsewhere"))
    proc = orc("lock", "status", "T", cwd=repo, env={"PYTHONIOENCODING": "ascii"})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "Zo\\xeb \\u4e2d (zo\\xeb@elsewhere)" in proc.stdout


# -- a holder's own lease always reads back as its own (issue 8, point 5) ---------------------

NASTY = '- &a *b !tag %x @y `z\n: "quoted" \'single\' # not a comment\r\x1b[2J\u202e\x00 ? |>'
IDENTITIES = {
    "600-character display name": {"display_name": "D" * 600},
    "600-character email": {"display_name": "Alice", "email": "e" * 590 + "@example.com"},
    "600-character user": {"user": "u" * 600},
    "hostile display name": {"display_name": NASTY},
    "hostile user and email": {"user": NASTY, "email": NASTY},
    "every field long and hostile": {"user": NASTY * 20, "display_name": NASTY * 20,
                                     "email": NASTY * 20, "initials": NASTY * 20},
}


@pytest.mark.parametrize("identity", list(IDENTITIES.values()), ids=list(IDENTITIES))
def test_holder_with_a_long_or_hostile_identity_keeps_its_lease(
        repo: Path, isolated_env: Path, holders: list[HolderProcess],
        identity: dict[str, str]) -> None:
    """A real holder process whose config names it with 600 characters, or with newlines,
    quotes, `: `, `#` and YAML-special first characters: its own live lease is its lease, so
    a second process is refused (it used to read as unreadable, hence stale: a double grant)."""
    from orc_git.identity import MAX_NAME

    (isolated_env / "config.yaml").write_text(
        yaml.safe_dump({"identity": {"user": "alice", **identity}}))
    holder = HolderProcess(repo, "T")
    holders.append(holder)
    second = orc_elsewhere("lock", "acquire", "T", "--json", cwd=repo)
    assert second.returncode == 1, second.stdout + second.stderr
    assert json.loads(second.stdout)["error"]["code"] == "LOCK_HELD"
    code, out = orc_json("lock", "status", "T", cwd=repo)
    assert code == 0
    lease = out["lock"]
    assert lease["locked"] is True and lease["stale"] is False, lease
    assert lease["pid"] == holder.pid and lease["token"] == holder.token
    assert len(lease["user"]) <= MAX_NAME and lease["user"].isprintable()
    assert lease["owner"] == f"{lease['user']}@{lease['host']}"
    assert lockyaml.parse(lock_path(repo, "T").read_bytes(), "T").pid == holder.pid
    text = orc("lock", "status", "T", cwd=repo)
    assert_no_raw(text.stdout)
    assert len(text.stdout.splitlines()) == 5  # the description's five lines, none forged


def test_holder_named_by_undecodable_git_config_keeps_its_lease(
        repo: Path, isolated_env: Path, holders: list[HolderProcess],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No display name in the config: git's user.name supplies it, here bytes that are not
    UTF-8 and a newline (it used to be a UnicodeDecodeError inside acquire)."""
    (isolated_env / "config.yaml").write_text("identity: {user: alice}\n")
    # git's command-line level of configuration, above any repository's: bytes 0xff 0xfe
    for key, value in {"GIT_CONFIG_COUNT": "2", "GIT_CONFIG_KEY_0": "user.name",
                       "GIT_CONFIG_VALUE_0": 'Al\udcff\udcfeice\n"#: x',
                       "GIT_CONFIG_KEY_1": "user.email",
                       "GIT_CONFIG_VALUE_1": "a\udcff@x"}.items():
        monkeypatch.setenv(key, value)
    holder = HolderProcess(repo, "T")
    holders.append(holder)
    assert orc_elsewhere("lock", "acquire", "T", cwd=repo).returncode == 1
    code, out = orc_json("lock", "status", "T", cwd=repo)
    assert code == 0 and out["lock"]["stale"] is False and out["lock"]["pid"] == holder.pid
    info = lockyaml.parse(lock_path(repo, "T").read_bytes(), "T")
    assert info.display_name == 'Al\\xff\\xfeice\\n"#: x'
    assert info.email == "a\\xff@x"
