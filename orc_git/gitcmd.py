"""Running git for the few questions its files do not answer cheaply (diffs, refs, config).

Plain subprocess calls: ``import git`` alone costs more than the hooks' whole time budget
(``docs/benchmarks.md``).
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from orc_git.errors import GitFailed

NULL_SHA = "0" * 40


def git(*args: str, cwd: Path | str, check: bool = True, input: str | None = None) -> str:
    try:
        # Names git prints (branches, paths) are bytes: any that are not UTF-8 come back as
        # surrogates, which round-trip into git's arguments and are escaped when printed.
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, encoding="utf-8",
                              errors="surrogateescape", input=input, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise GitFailed(f"cannot run git {args[0]}: {exc}") from None
    if check and proc.returncode != 0:
        command = shlex.join(["git", *args[:3]])
        raise GitFailed(f"{command} failed: {proc.stderr.strip()[:300]}")
    return proc.stdout


def rev(name: str, cwd: Path | str) -> str | None:
    out = git("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", cwd=cwd, check=False)
    return out.strip() or None


def changed_tasks(old: str, new: str, cwd: Path | str) -> set[str]:
    """Tasks whose committed files differ between two commits."""
    out = git("diff", "--name-only", "-z", "--no-renames", old, new, "--", ".orc/tasks",
              cwd=cwd, check=False)
    tasks = set()
    for path in out.split("\0"):
        parts = path.split("/")
        if len(parts) == 4 and parts[3] in ("state.yaml", "task.yaml"):
            tasks.add(parts[2])
    return tasks
