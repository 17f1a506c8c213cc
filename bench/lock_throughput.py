"""Uncontended acquire+release cycles per second, orc-git against filelock and a raw O_EXCL floor.

All subjects run in the same process, interleaved round by round, on the same filesystem (the
repository's ``.orc``).  Each round gives every subject a fixed slice of time; the figure is the
median over the rounds.  Target: ``orc_git.hold`` at least 2x the cycles/s of ``filelock``.

    python bench/lock_throughput.py
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from _common import file_locker, median, scratch_repo, table

ROUNDS = 7
SLICE = 0.4  # seconds per subject per round
BATCH = 50
TARGET = 2.0


def subjects(repo: Path) -> dict[str, Callable[[], None]]:
    import filelock

    import orc_git

    locker = file_locker(repo)
    headless = file_locker(repo)
    headless.handover = None  # records no HEAD: what the handover costs a cycle
    fl_path = str(repo / ".orc" / "local" / "bench.filelock")
    reused = filelock.FileLock(fl_path)
    floor_dir = repo / ".orc" / "tasks" / "FLOOR"
    floor_dir.mkdir()
    floor = str(floor_dir / "lock.yaml")
    excl = os.O_WRONLY | os.O_CREAT | os.O_EXCL

    def hold() -> None:
        with orc_git.hold("BENCH-HOLD", repo=repo):
            pass

    def file_locker_cycle() -> None:
        locker.acquire("BENCH-LOCKER")
        locker.release("BENCH-LOCKER")

    def headless_cycle() -> None:
        headless.acquire("BENCH-HEADLESS")
        headless.release("BENCH-HEADLESS")

    def filelock_new() -> None:
        lock = filelock.FileLock(fl_path)
        lock.acquire()
        lock.release()

    def filelock_reused() -> None:
        reused.acquire()
        reused.release()

    def raw_excl() -> None:
        os.close(os.open(floor, excl, 0o644))
        os.unlink(floor)

    return {
        "orc_git.hold() (public API)": hold,
        "FileLocker.acquire+release": file_locker_cycle,
        "FileLocker, no HEAD recorded": headless_cycle,
        "filelock.FileLock, new object": filelock_new,
        "filelock.FileLock, reused object": filelock_reused,
        "os.open O_EXCL+close+unlink (floor)": raw_excl,
    }


def rate(cycle: Callable[[], None], seconds: float) -> float:
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(BATCH):
            cycle()
        n += BATCH
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def main() -> None:
    from orc_git.locking.heartbeat import shared_heartbeater

    with scratch_repo("throughput") as repo:
        # A commit, as in any repository with work in it: every release then records the
        # holder's HEAD in its tombstone and every grant compares it with this one's.
        subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com",
                        "commit", "-q", "--allow-empty", "-m", "base"], cwd=repo, check=True)
        subs = subjects(repo)
        for cycle in subs.values():  # warm up: imports, caches, the heartbeat thread
            rate(cycle, 0.05)
        results: dict[str, list[float]] = {name: [] for name in subs}
        for _ in range(ROUNDS):
            for name, cycle in subs.items():
                results[name].append(rate(cycle, SLICE))
        shared_heartbeater().stop()

    med = {name: median(r) for name, r in results.items()}
    print(f"Uncontended acquire+release, one process, {ROUNDS} rounds x {SLICE} s "
          f"per subject (median, min-max)\n")
    table(["subject", "cycles/s", "us/cycle", "min", "max"],
          [[name, f"{med[name]:,.0f}", f"{1e6 / med[name]:.1f}", f"{min(r):,.0f}",
            f"{max(r):,.0f}"] for name, r in results.items()])
    hold, locker = med["orc_git.hold() (public API)"], med["FileLocker.acquire+release"]
    new, reused = med["filelock.FileLock, new object"], med["filelock.FileLock, reused object"]
    floor = med["os.open O_EXCL+close+unlink (floor)"]
    print()
    table(["ratio (cycles/s over cycles/s)", "value", "target"], [
        ["hold() / filelock (new object)", f"{hold / new:.2f}x", f">= {TARGET}x"],
        ["hold() / filelock (reused object)", f"{hold / reused:.2f}x", f">= {TARGET}x"],
        ["FileLocker / filelock (reused object)", f"{locker / reused:.2f}x", ""],
        ["FileLocker with HEAD / without (handover)",
         f"{locker / med['FileLocker, no HEAD recorded']:.2f}x", ""],
        ["hold() / O_EXCL floor", f"{hold / floor:.2f}x", ""],
    ])


if __name__ == "__main__":
    main()
