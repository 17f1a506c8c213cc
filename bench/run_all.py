"""Run every benchmark in turn and print its figures; exit non-zero if one of them failed.

    python bench/run_all.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("lock_throughput.py", "contention.py", "takeover_latency.py", "cli_list.py",
              "hooks.py", "run_overhead.py")


def main() -> int:
    failed = []
    for name in BENCHMARKS:
        print(f"=== {name} ===", flush=True)
        start = time.perf_counter()
        code = subprocess.run([sys.executable, str(HERE / name)]).returncode
        print(f"--- {name}: exit {code}, {time.perf_counter() - start:.1f} s\n", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
