"""Capped exponential backoff with jitter for reconnecting.

Jitter matters here: when a team server restarts, every client lost its connection at the same
instant; without it they would all knock again at the same instants too.  "Equal jitter" (half the
delay fixed, half random) keeps a floor under each wait, so a dead server is not hammered.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(self, initial: float = 0.1, cap: float = 5.0, factor: float = 2.0,
                 rand: Callable[[], float] = random.random) -> None:
        if not 0 < initial <= cap:
            raise ValueError("backoff needs 0 < initial <= cap")
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self._rand = rand
        self.attempts = 0

    def next(self) -> float:
        """The wait before the next attempt: within [d/2, d], d doubling up to ``cap``."""
        ceiling = min(self.cap, self.initial * self.factor ** min(self.attempts, 64))
        self.attempts += 1
        return ceiling / 2 + self._rand() * ceiling / 2

    def reset(self) -> None:
        self.attempts = 0
