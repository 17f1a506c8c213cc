"""orc_git.context: what a command knows about one repository, resolved once, per mode."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orc_git.context import Context, default_context
from orc_git.locking.base import NoOpLocker
from orc_git.locking.filelocker import FileLocker


def test_heartbeat_interval_is_at_most_a_third_of_the_ttl(ctx: Context) -> None:
    assert ctx.heartbeat_interval(60) == 10
    assert ctx.heartbeat_interval(3) == 1
    assert ctx.heartbeat_interval(1) == pytest.approx(1 / 3)


def test_solo_mode_locks_nothing_and_tells_no_one(solo_repo: Path) -> None:
    ctx = Context.discover(solo_repo)
    assert ctx.mode == "solo"
    assert isinstance(ctx.locker(), NoOpLocker)
    ctx.emit("acquired", "T", None)  # no plugin discovery in solo mode
    assert "plugins" not in ctx.__dict__
    assert not (solo_repo / ".orc" / "tasks").exists()


def test_the_p2p_locker_is_made_once_and_a_locker_for_another_pid_is_not_kept(
        repo: Path) -> None:
    ctx = Context.discover(repo)
    assert ctx.mode == "p2p"
    mine = ctx.locker()
    assert isinstance(mine, FileLocker) and ctx.locker() is mine
    assert mine.holder.pid == os.getpid()
    theirs = ctx.locker(pid=1)
    assert isinstance(theirs, FileLocker) and theirs.holder.pid == 1
    assert ctx.locker() is mine and ctx.locker(pid=1) is not theirs


def test_identity_comes_from_the_config_once(ctx: Context) -> None:
    assert ctx.identity is ctx.identity
    assert (ctx.identity.user, ctx.identity.display_name) == ("alice", "Alice Martinez")
    assert ctx.holder().identity is ctx.identity and ctx.holder(7).pid == 7


def test_default_context_is_one_per_repository_and_mode(
        repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = default_context(repo)
    assert default_context(repo) is first
    monkeypatch.setenv("ORC_MODE", "solo")
    solo = default_context(repo)
    assert solo is not first and solo.mode == "solo"
