"""orc_git.locking.wait: a waiter returns once the task is free or stale, or at its deadline."""

from __future__ import annotations

import threading
import time

import pytest

from orc_git.locking import wait
from orc_git.locking.info import LockInfo
from orc_git.locking.wait import wait_free


class Scripted:
    """A locker whose answers are set by the test (the real lockers are tested in test_lease)."""

    def __init__(self, *infos: LockInfo) -> None:
        self.infos = list(infos)
        self.calls = 0

    def is_locked(self, task_id: str) -> LockInfo:
        self.calls += 1
        return self.infos[0] if len(self.infos) == 1 else self.infos.pop(0)


HELD = LockInfo("T", locked=True, owner="bob@box")


def test_free_at_once_returns_true_without_waiting() -> None:
    locker = Scripted(LockInfo("T"))
    assert wait_free(locker, "T", deadline=time.monotonic()) is True  # type: ignore[arg-type]
    assert locker.calls == 1


def test_a_stale_lease_counts_as_free() -> None:
    locker = Scripted(LockInfo("T", locked=True, stale=True, stale_reason="expired"))
    assert wait_free(locker, "T", deadline=None) is True  # type: ignore[arg-type]


def test_held_until_the_deadline_returns_false_and_reports_progress() -> None:
    seen: list[tuple[str | None, float]] = []
    locker = Scripted(HELD)
    deadline = time.monotonic() + 0.3
    ok = wait_free(locker, "T", deadline, lambda i, waited: seen.append((i.owner, waited)))  # type: ignore[arg-type]
    assert ok is False and time.monotonic() >= deadline
    assert seen and all(owner == "bob@box" for owner, _ in seen)
    assert [w for _, w in seen] == sorted(w for _, w in seen)


def test_a_change_seen_by_peek_is_judged_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wait, "JUDGE_EVERY", 3600.0)  # only a peeked change can wake it

    class Peeking(Scripted):
        stamp = 1

        def peek(self, task_id: str) -> int:
            return self.stamp

        def is_locked(self, task_id: str) -> LockInfo:
            self.calls += 1
            return LockInfo("T") if self.stamp == 2 else HELD

    locker = Peeking(HELD)
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(
        wait_free(locker, "T", time.monotonic() + 60)), daemon=True)  # type: ignore[arg-type]
    waiter.start()
    deadline = time.monotonic() + 10
    while locker.calls < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert locker.calls == 1 and not result  # judged once, then only peeking
    locker.stamp = 2  # the lease file changed
    waiter.join(30)
    assert result == [True] and locker.calls == 2
