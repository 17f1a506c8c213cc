"""The process-wide heartbeat thread: beats on schedule, takes new leases, stops cleanly."""

from __future__ import annotations

import threading

from orc_git.locking.heartbeat import Heartbeater


class Beat:
    def __init__(self, interval: float, beats_wanted: int = 1) -> None:
        self.interval = interval
        self.count = 0
        self.wanted = beats_wanted
        self.done = threading.Event()

    def beat(self) -> None:
        self.count += 1
        if self.count >= self.wanted:
            self.done.set()


def test_beats_each_lease_and_stops_cleanly() -> None:
    hb = Heartbeater()
    slow, fast = Beat(30), Beat(0.01, beats_wanted=3)
    hb.add(slow)
    hb.add(fast)  # due long before the thread's current sleep ends: it must be woken
    assert fast.done.wait(5)
    assert slow.count == 0
    thread = hb._thread
    hb.stop()
    assert thread is not None and not thread.is_alive()


def test_removed_lease_is_not_beaten_and_thread_restarts() -> None:
    hb = Heartbeater()
    gone = Beat(0.1)
    hb.add(gone)
    hb.remove(gone)
    hb.stop()
    again = Beat(0.01, beats_wanted=30)  # outlives several of gone's intervals
    hb.add(again)  # a stopped heartbeater starts a new thread on demand
    assert again.done.wait(5)
    assert gone.count == 0
    hb.stop()
