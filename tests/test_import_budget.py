"""The import budget of the paths users feel on every call (figures: docs/benchmarks.md).

A git hook runs on every checkout and merge; ``hold()`` in solo mode must cost nothing.  Each is
run in a fresh interpreter and ``sys.modules`` is read after it: what it must never import is
listed here, in one place.  The rest of the code imports plainly at the top of its modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import git, orc

HOOK_NEVER = ("git", "yaml", "pluggy", "dataclasses", "inspect", "importlib.metadata", "logging",
              "calendar", "orc_git.plugin.manager")
SOLO_LEASE_NEVER = ("git", "yaml", "pluggy", "psutil", "orc_git.plugin.manager")

_RUN_HOOK = """
import json, sys
from orc_git.githooks.run import main
main(sys.argv[1:])
print(json.dumps(sorted(sys.modules)))
"""


def test_a_git_hook_imports_only_what_it_needs(repo: Path) -> None:
    """post-checkout over a checkout that brought a task state, with a live lease to judge: the
    report does all of its work and still imports no YAML parser, no GitPython, no pluggy, no
    dataclasses, no logging (configs and the plugin index are cached after the first run)."""
    git("commit", "-q", "--allow-empty", "-m", "base", cwd=repo)
    assert orc("task", "new", "T-1", cwd=repo).returncode == 0
    assert orc("task", "state", "T-1", "--status", "running", cwd=repo).returncode == 0
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "T-1 runs", cwd=repo)
    assert orc("lock", "acquire", "T-2", cwd=repo).returncode == 0
    argv = [sys.executable, "-c", _RUN_HOOK, "post-checkout", "HEAD~1", "HEAD", "1"]
    for _warm_up_then_measure in range(2):
        proc = subprocess.run(argv, cwd=repo, capture_output=True, text=True, timeout=60,
                              check=True)
    assert "T-1: running" in proc.stderr  # the report ran in full
    imported = set(json.loads(proc.stdout))
    assert "orc_git.githooks.report" in imported
    assert sorted(m for m in HOOK_NEVER if m in imported) == []


def test_the_solo_lease_imports_nothing_heavy_and_writes_nothing(solo_repo: Path,
                                                                 tmp_path: Path) -> None:
    """``hold()`` in a repository with no orc setup and no config file anywhere: no plugin
    discovery, no psutil, no YAML parser, nothing written."""
    empty_home = tmp_path / "empty-home"
    empty_home.mkdir()
    script = (
        "import json, sys, orc_git\n"
        f"with orc_git.hold('T', repo={str(solo_repo)!r}) as lease:\n"
        "    assert lease.token is None\n"
        f"ctx = orc_git.Context.discover({str(solo_repo)!r})\n"
        "print(ctx.mode, json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "ORC_HOME": str(empty_home)}, timeout=60)
    assert out.returncode == 0, out.stderr
    mode, modules = out.stdout.split(" ", 1)
    assert mode == "solo"
    imported = set(json.loads(modules))
    assert sorted(m for m in SOLO_LEASE_NEVER if m in imported) == []
    assert not (solo_repo / ".orc").exists()


def test_the_command_line_does_not_pay_for_gitpython() -> None:
    """Only `orc hooks …` and `orc tasks --team` may import GitPython (why: docs/design.md)."""
    code = ("import sys\nfrom orc_git.cli import build_parser\nbuild_parser()\n"
            "print('git' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False"]
