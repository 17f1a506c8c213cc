"""What GitPython would cost a short command: ``orc lock status T`` as it is (the repository found
by ``orc_git.repo.find_repo``, a few ``stat`` calls) beside the same command run after
``import git`` and ``git.Repo(search_parent_directories=True)``, and a bare interpreter.  Runs are
interleaved; the figure is the median of 20.  The decision it backs is in docs/design.md.

    python bench/cli_gitpython.py [RUNS]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from _common import PYTHON, median, ms, scratch_repo, table

RUNS = 20
WITH_GITPYTHON = ("import sys, git\n"
                  "git.Repo(search_parent_directories=True).git_dir\n"
                  "from orc_git.cli import main\n"
                  "sys.exit(main(sys.argv[1:]))\n")


def wall(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else RUNS
    subjects = {
        "python -c pass (interpreter floor)": [PYTHON, "-c", "pass"],
        "orc lock status T (find_repo)": [PYTHON, "-m", "orc_git", "lock", "status", "T"],
        "the same after GitPython discovery": [PYTHON, "-c", WITH_GITPYTHON, "lock", "status",
                                               "T"],
    }
    with scratch_repo("gitpython") as repo:
        times: dict[str, list[float]] = {name: [] for name in subjects}
        for _ in range(runs):
            for name, argv in subjects.items():
                times[name].append(wall(argv, repo))
    base = median(times["orc lock status T (find_repo)"])
    print(f"Short command wall time, median of {runs} interleaved runs (ms)\n")
    table(["command", "ms", "vs orc lock status"],
          [(name, ms(median(t)), f"{median(t) / base:.2f}x") for name, t in times.items()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
