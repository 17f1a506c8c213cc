"""Wall time of ``orc lock list`` and ``orc lock status`` over 1,000 and 10,000 task directories.

Each repository gets N task directories, 10% of them with a live lease.  The leases belong to this
process (they are written by short-lived helper processes on its behalf, as ``orc lock acquire``
does for its shell), so the CLI judges each holder and finds it alive.  Every command runs as a
fresh ``python -m orc_git`` subprocess; the figure is the median of a few runs.  For scale, the
table also shows a bare interpreter start and the in-process ``FileLocker.list_locks()``.
Target: ``orc lock list`` at most 1 s at 10,000 tasks.

    python bench/cli_list.py [SIZES...]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import PYTHON, file_locker, median, ms, scratch_repo, table

SIZES = (1_000, 10_000)
HELD_SHARE = 0.10
RUNS = 5
CHUNK = 500  # leases per helper process: each keeps one guard fd per lease open
TARGET_LIST = 1.0


def task_name(i: int) -> str:
    return f"TASK-{i:05d}"


def hold_for(repo: Path, owner: int, tasks: list[str]) -> None:
    """Helper process: take ``tasks`` on behalf of ``owner`` (a live process), then exit."""
    locker = file_locker(repo, pid=owner)
    for task in tasks:
        locker.acquire(task, ttl=3600)


def populate(repo: Path, size: int) -> list[str]:
    root = repo / ".orc" / "tasks"
    for i in range(size):
        (root / task_name(i)).mkdir()
    held = [task_name(i) for i in range(0, size, round(1 / HELD_SHARE))]
    ctx = mp.get_context("spawn")
    for at in range(0, len(held), CHUNK):
        p = ctx.Process(target=hold_for, args=(repo, os.getpid(), held[at:at + CHUNK]))
        p.start()
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"helper process failed with exit code {p.exitcode}")
    return held


def wall(argv: list[str], cwd: Path) -> tuple[float, str]:
    """Median wall time of ``argv`` over RUNS, and the last run's stdout."""
    times, out = [], ""
    for _ in range(RUNS):
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
        out = proc.stdout
    return median(times), out


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or list(SIZES)
    orc = [PYTHON, "-m", "orc_git", "lock"]
    rows: list[list[object]] = []
    with scratch_repo("cli-list") as repo:
        floor, _ = wall([PYTHON, "-c", "pass"], repo)
        rows.append(["python -c pass (interpreter floor)", "-", "-", ms(floor), ""])
    for size in sizes:
        with scratch_repo(f"cli-list-{size}") as repo:
            held = populate(repo, size)
            free = task_name(1)
            for argv, label, target in (
                    ([*orc, "list"], "orc lock list", TARGET_LIST),
                    ([*orc, "list", "--json"], "orc lock list --json", None),
                    ([*orc, "list", "--stale"], "orc lock list --stale", None),
                    ([*orc, "status", held[-1]], "orc lock status HELD", None),
                    ([*orc, "status", free], "orc lock status FREE", None)):
                seconds, out = wall(argv, repo)
                shown: object = "-"
                if label == "orc lock list":
                    shown = sum(1 for line in out.splitlines() if "\theld\t" in line)
                rows.append([label, f"{size:,}", shown, ms(seconds),
                             f"<= {target * 1000:.0f}" if target else ""])
            locker = file_locker(repo)
            start = time.perf_counter()
            live = sum(not i.stale for i in locker.list_locks())
            rows.append(["FileLocker.list_locks() in-process", f"{size:,}", live,
                         ms(time.perf_counter() - start), ""])
    print(f"CLI wall time, median of {RUNS} runs; {HELD_SHARE:.0%} of tasks hold a live lease\n")
    table(["command", "tasks", "held shown", "ms", "target ms"], rows)


if __name__ == "__main__":
    main()
