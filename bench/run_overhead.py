"""What ``orc run`` costs per output line over ``orc lock run``, in p2p mode.

Both commands run ``seq 1 N`` (default 20,000 lines) as fresh subprocesses, stdout to
/dev/null (the pipe path: no terminal), interleaved over several rounds.  Each is also run on
``seq 1 1`` so that the fixed costs (startup, the state writes and the plugin lookup of
``orc run``) can be taken out: the per-line figure is

    ((run(N) - run(1)) - (lock_run(N) - lock_run(1))) / (N - 1)

and the whole-command difference divided by N is printed beside it.  In p2p mode no plugin
provides a sink, so this is the executor's own work per line (reading, passing through,
splitting, decoding, making the event); the team-mode sink (the outbox) is measured by the
team client's benchmark.  Target: at most 50 us extra per line.  Medians of the rounds.

    python bench/run_overhead.py [LINES] [ROUNDS]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from _common import PYTHON, median, scratch_repo, table

LINES = 20_000
ROUNDS = 7
TARGET_US = 50.0


def timed(repo: Path, argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   stdin=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def in_process(lines: int) -> float:
    """Seconds per line of the executor's work alone: split, decode, make and publish one
    read's events (NullSink), for ``seq``-like output in 64 KiB reads."""
    from orc_git.executor.lines import LineSplitter
    from orc_git.executor.publisher import Publisher
    from orc_git.publish import NullSink

    data = b"".join(b"%d\n" % i for i in range(1, lines + 1))
    best = float("inf")
    for _ in range(5):
        splitter, pub = LineSplitter(), Publisher("T", None, NullSink())
        start = time.perf_counter()
        for i in range(0, len(data), 65536):
            pub.transcript("stdout", splitter.feed(data[i:i + 65536]))
        pub.transcript("stdout", splitter.flush())
        best = min(best, time.perf_counter() - start)
    return best / lines


def main() -> int:
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else LINES
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else ROUNDS
    orc = [PYTHON, "-m", "orc_git"]
    with scratch_repo("run") as repo:
        cases = {
            ("run", lines): [*orc, "run", "T", "--", "seq", "1", str(lines)],
            ("lock run", lines): [*orc, "lock", "run", "T", "--", "seq", "1", str(lines)],
            ("run", 1): [*orc, "run", "T", "--", "seq", "1", "1"],
            ("lock run", 1): [*orc, "lock", "run", "T", "--", "seq", "1", "1"],
        }
        timed(repo, cases[("run", 1)])  # creates the task once, warms the caches
        samples: dict[tuple[str, int], list[float]] = {k: [] for k in cases}
        for _ in range(rounds):
            for key, argv in cases.items():
                samples[key].append(timed(repo, argv))
    med = {k: median(v) for k, v in samples.items()}
    table(["command", f"seq 1 {lines} (ms)", "seq 1 1 (ms)"],
          [(name, f"{med[(name, lines)] * 1000:.1f}", f"{med[(name, 1)] * 1000:.1f}")
           for name in ("lock run", "run")])
    whole = (med[("run", lines)] - med[("lock run", lines)]) / lines * 1e6
    per_line = ((med[("run", lines)] - med[("run", 1)])
                - (med[("lock run", lines)] - med[("lock run", 1)])) / (lines - 1) * 1e6
    print(f"\norc run extra per line, fixed costs taken out: {per_line:.2f} us "
          f"(target <= {TARGET_US:.0f} us)")
    print(f"orc run extra per line, whole command / {lines}: {whole:.2f} us")
    print(f"executor work per line in process (split + decode + event, NullSink): "
          f"{in_process(lines) * 1e6:.2f} us")
    print(f"({rounds} interleaved rounds, medians; p2p mode, stdout to /dev/null)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
