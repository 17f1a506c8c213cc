"""One heartbeat thread per process renews every lease the process holds.

A thread per lease would cost more to start than the whole uncontended lease cycle; one daemon
thread sleeping on a condition until the next beat is due costs nothing while idle.  Its waits use
the monotonic clock, so a process resumed after ``SIGSTOP`` beats at once and learns at once
whether its lease survived.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Beating(Protocol):
    interval: float

    def beat(self) -> None: ...


class Heartbeater:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[Beating, float] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False

    def add(self, lease: Beating) -> None:
        with self._cond:
            self._due[lease] = time.monotonic() + lease.interval
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name="orc-heartbeat",
                                                daemon=True)
                self._thread.start()
            else:
                self._cond.notify()  # the new lease may be due before the current sleep ends

    def remove(self, lease: Beating) -> None:
        with self._cond:
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
                while not self._stopping and not self._due:
                    self._cond.wait()
                if self._stopping:
                    return
                now = time.monotonic()
                wake = min(self._due.values())
                if wake > now:
                    self._cond.wait(wake - now)
                    continue
                ready = [lease for lease, due in self._due.items() if due <= now]
                for lease in ready:
                    self._due[lease] = now + lease.interval
            for lease in ready:
                lease.beat()  # never raises: a lease reports its own trouble


_shared: Heartbeater | None = None
_shared_lock = threading.Lock()


def shared_heartbeater() -> Heartbeater:
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Heartbeater()
        return _shared
