"""Busy polling, shared by the server's event loop and a client waiting for its reply.

On a VM, waking a thread that slept in ``poll``/``epoll_wait`` cost more than a loopback round trip
itself (``bench/client_bench.py``; figures in ``docs/benchmarks.md``). So each side keeps polling
for up to :data:`SPIN` before it sleeps. It costs CPU only right after activity, and only makes
sense with a CPU to spare: with one, the spinner would just keep the other side (often on the same
machine) from running.
"""

from __future__ import annotations

import os

SPIN = 0.0002
"""Seconds to keep polling before sleeping."""


def spare_cpu() -> bool:
    """More than one CPU to run on (POSIX with ``sched_getaffinity``; elsewhere, no spinning)."""
    return len(os.sched_getaffinity(0)) > 1 if hasattr(os, "sched_getaffinity") else False
