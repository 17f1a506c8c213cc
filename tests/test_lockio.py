"""orc_git.locking.lockio: lease files written so that readers see whole leases, read without
trusting them, released in place as tombstones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orc_git.errors import StorageError
from orc_git.locking import lockio, lockyaml
from orc_git.locking.info import LockInfo
from orc_git.locking.lockio import DEAD, LOCK_NAME


def body(task: str = "T", token: int = 1, note: str = "") -> bytes:
    """A valid lease, as orc writes it; ``note`` makes it longer (a display name)."""
    return lockyaml.render(LockInfo(
        task, owner="alice@box", user="alice", host="box", pid=1, pid_started=1.0,
        host_id="box/1/2", acquired_at="2026-01-01T00:00:00Z",
        heartbeat_at="2026-01-01T00:00:00Z", ttl=60, token=token, display_name=note or None))


def test_create_claims_once_then_refuses(tmp_path: Path) -> None:
    calls: list[int] = []

    def content(previous: bytes) -> bytes:
        assert previous == b""  # a new file: no tombstone to carry anything on from
        calls.append(1)
        return body()

    written = lockio.create(str(tmp_path), content)
    assert written is not None and lockio.holds(str(tmp_path), written)
    assert lockio.create(str(tmp_path), content) is None
    assert calls == [1]  # a contender never built (minted) its content
    info = lockio.read(str(tmp_path), "T")
    assert info is not None and (info.owner, info.token, info.locked) == ("alice@box", 1, True)
    os.close(written[0])


def test_release_is_a_tombstone_and_a_grant_writes_over_it_in_place(tmp_path: Path) -> None:
    written = lockio.create(str(tmp_path), lambda _: body(note="x" * 100))
    assert written is not None
    ino = written[1]
    lockio.bury(written[0])
    os.close(written[0])
    assert lockio.read(str(tmp_path), "T") is None  # a tombstone is a free task
    assert (tmp_path / LOCK_NAME).read_bytes().startswith(DEAD)
    tomb = lockio.open_tombstone(str(tmp_path))
    assert tomb is not None
    seen: list[bytes] = []
    again = lockio.claim(str(tmp_path), lambda old: seen.append(old) or body(token=2), tomb)
    assert seen == [DEAD + body(note="x" * 100)[len(DEAD):]]  # the grant saw the tombstone
    assert again is not None and again[1] == ino  # the same file: no directory change
    assert (tmp_path / LOCK_NAME).read_bytes() == body(token=2)  # the longer old body is cut
    assert lockio.claim(str(tmp_path), lambda _: body(token=3)) is None  # held now
    os.close(again[0])


def test_holds_is_false_once_someone_else_replaced_the_lease(tmp_path: Path) -> None:
    written = lockio.create(str(tmp_path), lambda _: body())
    assert written is not None
    lockio.replace(str(tmp_path), body(token=5))
    assert not lockio.holds(str(tmp_path), written)
    assert not (tmp_path / lockio.TMP_NAME).exists()
    info = lockio.read(str(tmp_path), "T")
    assert info is not None and info.token == 5
    os.close(written[0])


def test_bad_files_read_as_unreadable_never_raise(tmp_path: Path) -> None:
    path = tmp_path / LOCK_NAME
    path.write_bytes(b"\x00garbage")
    info = lockio.read(str(tmp_path), "T")
    assert info is not None and info.stale_reason == "unreadable" and info.locked
    path.unlink()
    path.symlink_to(tmp_path / "target")
    info = lockio.read(str(tmp_path), "T")
    assert info is not None and "symbolic link" in (info.problem or "")
    path.unlink()
    os.mkfifo(path)
    info = lockio.read(str(tmp_path), "T")  # O_NONBLOCK: no hang on a FIFO
    assert info is not None and "not a regular file" in (info.problem or "")
    assert lockio.open_tombstone(str(tmp_path)) is None
    path.unlink()
    assert lockio.read(str(tmp_path), "T") is None and lockio.current_stamp(str(tmp_path)) is None


def test_stamp_changes_with_each_write(tmp_path: Path) -> None:
    lockio.replace(str(tmp_path), body())
    first = lockio.current_stamp(str(tmp_path))
    lockio.replace(str(tmp_path), body(token=22))
    assert first is not None and lockio.current_stamp(str(tmp_path)) != first


def test_remove_refuses_a_directory_with_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).mkdir()
    with pytest.raises(StorageError, match="it is a directory"):
        lockio.remove(str(tmp_path))
    with pytest.raises(StorageError, match="a directory is in the way"):
        lockio.replace(str(tmp_path), body())


def test_fs_now_is_the_filesystem_clock_and_leaves_nothing(tmp_path: Path) -> None:
    probe = tmp_path / "p"
    probe.write_text("x")
    assert abs(lockio.fs_now(str(tmp_path)) - probe.stat().st_mtime) < 60
    assert [p.name for p in tmp_path.iterdir()] == ["p"]
