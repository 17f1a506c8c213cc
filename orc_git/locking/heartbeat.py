"""One heartbeat thread per process renews every lease the process holds.

A thread per lease would cost more to start than the whole uncontended lease cycle; one daemon
thread sleeping on a condition until the next beat is due costs nothing while idle.  Its waits use
the monotonic clock, so a process resumed after ``SIGSTOP`` beats at once and learns at once
whether its lease survived.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Protocol


class Beating(Protocol):
    interval: float

    def beat(self) -> None: ...


class Heartbeater:
    def __init__(self) -> None:
        self._mutex = threading.Lock()  # entered directly: Condition.__enter__ is Python code
        self._cond = threading.Condition(self._mutex)
        self._due: dict[Beating, float] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._wake_at = math.inf  # when the thread will next look at the schedule

    def add(self, lease: Beating) -> None:
        with self._mutex:
            due = time.monotonic() + lease.interval
            self._due[lease] = due
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._wake_at = due
                self._thread = threading.Thread(target=self._run, name="orc-heartbeat",
                                                daemon=True)
                self._thread.start()
            elif due < self._wake_at:
                # Wake the thread only when it would sleep past this lease: a wake-up per
                # acquire would cost the acquiring thread a GIL hand-off every time.  The
                # thread then sleeps at least until this due time, even if the lease goes.
                self._wake_at = due
                self._cond.notify()

    def remove(self, lease: Beating) -> None:
        with self._mutex:
            self._due.pop(lease, None)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the thread (leases stay held, unrenewed); ``add`` starts it again."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                now = time.monotonic()
                ready = [lease for lease, due in self._due.items() if due <= now]
                if not ready:
                    if self._due:
                        self._wake_at = min(self._due.values())
                    elif self._wake_at <= now:
                        self._wake_at = math.inf  # idle: sleep until a lease arrives
                    # else: keep the old wake time, so a lease added soon needs no wake-up
                    self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)
                    continue
                for lease in ready:
                    self._due[lease] = now + lease.interval
                self._wake_at = now
            for lease in ready:
                lease.beat()  # never raises: a lease reports its own trouble


_shared: Heartbeater | None = None
_shared_lock = threading.Lock()


def shared_heartbeater() -> Heartbeater:
    global _shared
    if _shared is not None:
        return _shared
    with _shared_lock:
        if _shared is None:
            _shared = Heartbeater()
        return _shared
