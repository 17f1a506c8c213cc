"""Wall time of the git hooks on a repository with 1,000 tasks, beside a no-op hook run through
the pre-commit framework, and of ``orc tasks --team`` over 200 remote-tracking branches.

Each hook runs as git runs it: a fresh process through the installed shim, timed from outside.
Target: post-checkout and post-merge <= 100 ms (pre-commit's no-op costs about 250 ms).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import PYTHON, median, ms, scratch_repo, table

from orc_git.handover import Head, head_line
from orc_git.locking.lockyaml import DEAD

TASKS = 1000
BRANCHES = 200
ROUNDS = 7


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


def write_tasks(repo: Path, running_every: int = 50) -> None:
    for i in range(TASKS):
        d = repo / ".orc" / "tasks" / f"TASK-{i:04d}"
        d.mkdir(parents=True)
        (d / "task.yaml").write_text(f'id: "TASK-{i:04d}"\ntitle: "task {i}"\n'
                                     'created_by: "bob"\ncreated_at: "2026-11-25T10:00:00Z"\n')
        status = "running" if i % running_every == 0 else "completed"
        (d / "state.yaml").write_text(
            f'task_id: "TASK-{i:04d}"\nstatus: "{status}"\nphase: "implement"\niteration: 1\n'
            'updated_at: "2026-11-25T10:00:00Z"\nupdated_by: "bob"\nhost: "elsewhere"\n'
            'token: 3\n')
        # Every task has run here once: its released lease is a tombstone the hooks read.
        (d / "lock.fence").write_bytes(b"\n" * 3)
        (d / "lock.yaml").write_bytes(DEAD + f'task_id: "TASK-{i:04d}"\ntoken: 3\n'.encode())


def timed(argv: list[str], repo: Path) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=repo, check=True, capture_output=True)
    return time.perf_counter() - started


def record_heads(repo: Path, base: str, ahead: str) -> None:
    """Give each tombstone the head its release recorded, as orc-git writes them: most at this
    checkout's HEAD, one in ten at a commit it lacks (another branch), one in a hundred at a
    commit it has never seen (force-pushed away): the post hooks' report looks them all up."""
    for i in range(TASKS):
        commit = ahead if i % 10 == 1 else ("ab" * 20 if i % 100 == 7 else base)
        head = Head(commit, "origin/main", "bob@elsewhere", "2026-11-25T10:00:00Z")
        (repo / ".orc" / "tasks" / f"TASK-{i:04d}" / "lock.yaml").write_bytes(
            DEAD + f'task_id: "TASK-{i:04d}"\ntoken: 3\n'.encode() + head_line(head))


def hook_times(repo: Path) -> list[tuple[str, float]]:
    hooks_dir = Path(git(repo, "rev-parse", "--path-format=absolute", "--git-path", "hooks"))
    base, changed = git(repo, "rev-parse", "main"), git(repo, "rev-parse", "changed")
    git(repo, "update-ref", "ORIG_HEAD", base)
    cases = {
        "post-checkout (10 tasks changed)": [str(hooks_dir / "post-checkout"), base, changed, "1"],
        "post-merge (10 tasks changed)": [str(hooks_dir / "post-merge"), "0"],
        "pre-commit (nothing staged)": [str(hooks_dir / "pre-commit")],
    }
    out = []
    for name, argv in cases.items():
        timed(argv, repo)  # warm the caches, as every checkout after the first finds them
        out.append((name, median([timed(argv, repo) for _ in range(ROUNDS)])))
    return out


def pre_commit_noop(repo: Path) -> float | None:
    """A no-op local hook run through the pre-commit framework, the way it runs on a checkout."""
    exe = shutil.which("pre-commit") or str(Path(PYTHON).parent / "pre-commit")
    if not os.path.exists(exe):
        return None
    (repo / ".pre-commit-config.yaml").write_text(
        "repos:\n- repo: local\n  hooks:\n  - id: noop\n    name: noop\n    entry: 'true'\n"
        "    language: system\n    always_run: true\n    pass_filenames: false\n"
        "    stages: [post-checkout]\n")
    argv = [exe, "run", "--hook-stage", "post-checkout", "--from-ref", "HEAD", "--to-ref",
            "HEAD"]
    env_home = repo.parent / "pre-commit-home"
    os.environ["PRE_COMMIT_HOME"] = str(env_home)
    timed(argv, repo)
    return median([timed(argv, repo) for _ in range(ROUNDS)])


def team_view(repo: Path) -> tuple[float, int]:
    remote = repo.parent / "remote.git"
    git(repo.parent, "init", "-q", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    refs = []
    tip = git(repo, "rev-parse", "main")
    for b in range(BRANCHES):  # branches that each move a few tasks along
        state = repo / ".orc" / "tasks" / f"TASK-{b % TASKS:04d}" / "state.yaml"
        state.write_text(state.read_text().replace('"completed"', '"running"')
                         .replace("iteration: 1", f"iteration: {b + 2}"))
        git(repo, "commit", "-qam", f"branch {b}")
        refs.append(f"{git(repo, 'rev-parse', 'HEAD')}:refs/heads/b{b:03d}")
        git(repo, "reset", "-q", "--hard", tip)
    git(repo, "push", "-q", "origin", "main", *refs)
    git(repo, "fetch", "-q", "origin")
    argv = [PYTHON, "-m", "orc_git", "tasks", "--team", "--json"]
    timed(argv, repo)
    return median([timed(argv, repo) for _ in range(3)]), BRANCHES


def bytecode_note() -> str:
    """Whether the hooks find orc_git compiled: without ``__pycache__`` (a checkout run with
    PYTHONDONTWRITEBYTECODE=1) every hook compiles its modules again, which a pip install does
    once."""
    import orc_git

    cached = any((Path(orc_git.__file__).parent / "__pycache__").glob("*.pyc"))
    if cached:
        return "orc_git bytecode: present"
    return ("orc_git bytecode: absent (PYTHONDONTWRITEBYTECODE=1?): every hook compiles orc_git's "
            "modules, which an installed package does not")


def main() -> int:
    with scratch_repo("hooks") as repo:
        write_tasks(repo)
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "1000 tasks")
        git(repo, "branch", "-M", "main")
        git(repo, "checkout", "-q", "-b", "changed")
        for i in range(1, 11):
            path = repo / ".orc" / "tasks" / f"TASK-{i:04d}" / "state.yaml"
            path.write_text(path.read_text().replace('"completed"', '"running"'))
        git(repo, "commit", "-qam", "10 tasks move")
        git(repo, "checkout", "-q", "main")
        record_heads(repo, git(repo, "rev-parse", "main"), git(repo, "rev-parse", "changed"))
        subprocess.run([PYTHON, "-m", "orc_git", "hooks", "install"], cwd=repo, check=True,
                       capture_output=True)
        rows = [(name, ms(t), "<= 100" if "post" in name else "") for name, t in
                hook_times(repo)]
        noop = pre_commit_noop(repo)
        rows.append(("pre-commit framework, no-op hook",
                     ms(noop) if noop is not None else "n/a (pip install pre-commit)", ""))
        floor = median([timed([PYTHON, "-c", "pass"], repo) for _ in range(ROUNDS)])
        rows.append(("python -c pass (interpreter floor)", ms(floor), ""))
        print(f"Git hooks on a repository with {TASKS} tasks, median of {ROUNDS} runs; "
              f"{bytecode_note()}\n")
        table(["hook", "ms", "target ms"], rows)
        seconds, branches = team_view(repo)
        print()
        table(["command", "branches", "ms"], [("orc tasks --team --json", branches, ms(seconds))])
    return 0


if __name__ == "__main__":
    sys.exit(main())
