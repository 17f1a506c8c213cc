"""An event loop that keeps polling for a moment after it has handled I/O, before it sleeps
(why: :mod:`orc_team.spin`).

After the loop has handled I/O it polls without sleeping for up to ``spin`` seconds (0.2 ms by
default): the next request of a client in a loop of them is handled with no wake-up.  With the
client spinning the same way (:mod:`orc_team.client.link`) a lock+unlock cycle took 0.25-0.31 ms
instead of 0.41-0.50 ms on the bench machine (``bench/team_bench.py``).

The price is CPU: at most ``spin`` seconds per burst of activity, none while the server is idle
(a loop woken by a timer, with no I/O, sleeps again at once).  ``orc team serve --busy-poll 0``
turns it off, and it is off when the process has a single CPU, where it would only keep the
client from running.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from typing import Any

from orc_team.spin import spare_cpu


class SpinningSelector(selectors.DefaultSelector):
    def __init__(self, spin: float) -> None:
        super().__init__()
        self.spin = spin
        self._active = False  # the last select found I/O

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        if timeout is not None and timeout <= 0:  # the loop has callbacks ready: just look
            ready = super().select(timeout)
            self._active = self._active or bool(ready)
            return ready
        if self._active and self.spin:
            end = time.monotonic() + (self.spin if timeout is None else min(self.spin, timeout))
            while time.monotonic() < end:
                ready = super().select(0)
                if ready:
                    return ready
            if timeout is not None:
                timeout = max(timeout - self.spin, 0)
        ready = super().select(timeout)
        self._active = bool(ready)  # woken by a timer alone: idle, sleep at once next time
        return ready


def event_loop(spin: float) -> asyncio.AbstractEventLoop:
    """The server's loop: a spinning one when ``spin`` and a spare CPU allow, else the stdlib's."""
    if spin > 0 and spare_cpu():
        return asyncio.SelectorEventLoop(SpinningSelector(spin))
    return asyncio.new_event_loop()
