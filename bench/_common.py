"""Helpers shared by the benchmarks: a scratch p2p repository with an isolated ORC_HOME, a
file locker for it, and a plain-text table printer.  Not a benchmark itself."""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orc_git.locking.filelocker import FileLocker

PYTHON = sys.executable

# Takeovers log a warning each; the figures are what the benchmarks are for.
logging.getLogger("orc_git").addHandler(logging.NullHandler())


def isolate(home: Path) -> None:
    """Point ORC_HOME at ``home`` and drop every other ORC_* variable (children inherit it)."""
    for name in list(os.environ):
        if name.startswith("ORC_"):
            del os.environ[name]
    os.environ["ORC_HOME"] = str(home)


@contextmanager
def scratch_repo(name: str) -> Iterator[Path]:
    """A fresh git repository switched to p2p by ``orc init``; removed afterwards."""
    top = Path(tempfile.mkdtemp(prefix=f"orc-bench-{name}-")).resolve()
    saved = dict(os.environ)
    try:
        home = top / "orc-home"
        home.mkdir()
        (home / "config.yaml").write_text(
            "identity: {user: bench, display_name: Bench Mark, email: bench@example.com}\n")
        isolate(home)
        repo = top / "repo"
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        subprocess.run([PYTHON, "-m", "orc_git", "init", "--mode", "p2p"], cwd=repo,
                       check=True, capture_output=True)
        yield repo
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(top, ignore_errors=True)


def file_locker(repo: Path, pid: int | None = None) -> FileLocker:
    """The repository's p2p locker, held by this process (or by ``pid``)."""
    from orc_git.context import Context

    ctx = Context.discover(repo)
    assert ctx.mode == "p2p", ctx.mode_reason
    return ctx.file_locker(pid)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print rows under headers; the first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in row] for row in (headers, *rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
