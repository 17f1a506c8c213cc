"""Eight processes contend for one task's lease for a fixed time; nobody may overlap.

Each worker loops: ``FileLocker.acquire`` (retried on ``LockHeld``), a critical section that runs
three overlap detectors, then ``release``.  The detectors: a shared counter of workers inside the
section (must never exceed 1), an ``O_EXCL`` marker file (must never exist on entry) and the
fencing token (each grant's token must exceed every earlier grant's).  Workers stop by themselves
at the deadline.  Target: 0 overlaps, 0 token regressions; grants/s is reported, not judged.

    python bench/contention.py [WORKERS] [SECONDS]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from _common import file_locker, scratch_repo, table

WORKERS = 8
DURATION = 5.0
TASK = "BENCH-CONTENDED"
RETRY_PAUSE = 0.0005  # after a refusal, so a 2-CPU box still runs the holder
COUNTS = ("grants", "refusals", "overlaps", "marker_overlaps", "token_regressions",
          "release_failures", "errors")


def worker(repo: Path, start: Any, deadline: Any, inside: Any, last_token: Any,
           results: Any, ready: Any) -> None:
    from orc_git.errors import LockHeld, OrcError

    locker = file_locker(repo)
    marker = str(repo / ".orc" / "local" / "critical-section")
    excl = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    n = dict.fromkeys(COUNTS, 0)
    ready.release()
    start.wait()
    try:
        while time.time() < deadline.value:
            try:
                info = locker.acquire(TASK)
            except LockHeld:
                n["refusals"] += 1
                time.sleep(RETRY_PAUSE)
                continue
            except OrcError:
                n["errors"] += 1
                continue
            n["grants"] += 1
            with inside.get_lock():
                inside.value += 1
                if inside.value > 1:
                    n["overlaps"] += 1
            with last_token.get_lock():
                if (info.token or 0) <= last_token.value:
                    n["token_regressions"] += 1
                last_token.value = max(last_token.value, info.token or 0)
            try:
                os.close(os.open(marker, excl, 0o644))
                os.unlink(marker)
            except FileExistsError:
                n["marker_overlaps"] += 1
            with inside.get_lock():
                inside.value -= 1
            try:
                if not locker.release(TASK):
                    n["release_failures"] += 1
            except OrcError:
                n["errors"] += 1
    except Exception:  # report, never hang the parent
        traceback.print_exc()
        n["errors"] += 1
    finally:
        results.put((os.getpid(), n))


def main() -> None:
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else WORKERS
    duration = float(sys.argv[2]) if len(sys.argv) > 2 else DURATION
    ctx = mp.get_context("spawn")
    with scratch_repo("contention") as repo:
        start, ready = ctx.Event(), ctx.Semaphore(0)
        deadline = ctx.Value("d", 0.0)
        inside, last_token = ctx.Value("i", 0), ctx.Value("q", 0)
        results = ctx.Queue()
        procs = [ctx.Process(target=worker, args=(repo, start, deadline, inside, last_token,
                                                  results, ready)) for _ in range(workers)]
        for p in procs:
            p.start()
        for _ in procs:
            ready.acquire(timeout=30)
        began = time.perf_counter()
        deadline.value = time.time() + duration
        start.set()
        per_worker = [results.get(timeout=duration + 30) for _ in procs]
        elapsed = time.perf_counter() - began
        stuck = 0
        for p in procs:
            p.join(10)
            if p.is_alive():  # never expected: the workers stop at the deadline
                stuck += 1
                p.kill()
                p.join()

    total = {k: sum(n[k] for _, n in per_worker) for k in COUNTS}
    print(f"{workers} processes contending for one task for {duration:.0f} s "
          f"(measured {elapsed:.2f} s, FileLocker, spawn)\n")
    table(["worker pid", "grants", "refusals"],
          [[pid, n["grants"], n["refusals"]] for pid, n in sorted(per_worker)])
    print()
    table(["figure", "value", "target"], [
        ["grants/s (all workers)", f"{total['grants'] / elapsed:,.0f}", ""],
        ["grants total", total["grants"], ""],
        ["refusals (LockHeld, retried)", total["refusals"], ""],
        ["overlaps (counter > 1)", total["overlaps"], "0"],
        ["overlaps (O_EXCL marker existed)", total["marker_overlaps"], "0"],
        ["fencing token regressions", total["token_regressions"], "0"],
        ["release() returned False", total["release_failures"], "0"],
        ["other OrcError", total["errors"], "0"],
        ["workers that did not stop by themselves", stuck, "0"],
    ])


if __name__ == "__main__":
    main()
