"""The team's view of tasks: every remote-tracking branch's committed task state, read straight
from git objects (nothing checked out) with pipelined ``git cat-file --batch`` rounds.

Three rounds whatever the number of branches: every branch's ``.orc/tasks`` tree, then every
distinct task tree, then every distinct ``state.yaml`` blob, each round written in one go while
its answers stream back.  Branches mostly share trees and blobs, so a branch that moved one task
costs one tree and one blob more.  (GitPython's object reads are one round trip each: 1.9 s at
200 branches of 1,000 tasks, against a fraction of that here.)
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from orc_git.errors import StateUnreadable
from orc_git.gitcmd import git
from orc_git.state import TaskState, parse_state


class TeamTask(NamedTuple):
    task_id: str
    state: TaskState | None  # the most recently updated state across branches
    branches: list[str]
    problems: list[str]


_ENTRY = re.compile(rb"(\d+) ([^\0]*)\0(.{20})", re.DOTALL)


def _entries(raw: bytes, trees: bool = False) -> dict[bytes, str]:
    """A raw tree object's entries (only subtrees with ``trees``): name -> hex sha."""
    return {m[2]: m[3].hex() for m in _ENTRY.finditer(raw) if not trees or m[1] == b"40000"}


def cat_batch(cwd: Path, names: Iterable[str]) -> dict[str, bytes]:
    """Objects by name (``sha`` or ``rev:path``), one ``cat-file --batch`` for all; names git
    cannot resolve are left out."""
    wanted = list(dict.fromkeys(names))
    proc = subprocess.Popen(["git", "cat-file", "--batch"], cwd=cwd, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    stdin = proc.stdin

    def feed() -> None:  # written from a thread so that neither pipe can fill up and stall
        try:
            stdin.write("".join(f"{n}\n" for n in wanted).encode())
        except BrokenPipeError:
            pass
        finally:
            stdin.close()

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    out: dict[str, bytes] = {}
    try:
        for name in wanted:
            header = proc.stdout.readline().split()
            if len(header) == 3 and header[2].isdigit():
                out[name] = proc.stdout.read(int(header[2]) + 1)[:-1]
            elif not header:
                break
    finally:
        proc.stdout.close()
        writer.join()
        proc.wait()
    return out


def _newer(a: TaskState, b: TaskState) -> bool:
    """Later update wins; within one second, the higher fencing token (the later lease)."""
    return (a.updated_at, a.token or -1) > (b.updated_at, b.token or -1)


def team_states(worktree: Path) -> list[TeamTask]:
    refs = []
    for line in git("for-each-ref", "--format=%(objectname) %(symref) %(refname:short)",
                    "refs/remotes", cwd=worktree).splitlines():
        sha, symref, name = [*line.split(" ", 2), "", ""][:3]
        if name and not symref:  # origin/HEAD points at a branch listed anyway
            refs.append((sha, name))
    trees = cat_batch(worktree, (f"{sha}:.orc/tasks" for sha, _ in refs))
    listing = {sha: _entries(trees[f"{sha}:.orc/tasks"], trees=True)
               for sha, _ in refs if f"{sha}:.orc/tasks" in trees}
    subtrees = cat_batch(worktree, {sub for entries in listing.values()
                                    for sub in entries.values()})
    blob_of = {sub: _entries(raw).get(b"state.yaml") for sub, raw in subtrees.items()}
    blobs = cat_batch(worktree, {b for b in blob_of.values() if b})
    tasks: dict[str, TeamTask] = {}
    states: dict[str, TaskState | str] = {}
    for sha, name in refs:
        for task_b, sub in listing.get(sha, {}).items():
            blob = blob_of.get(sub)
            if blob is None or blob not in blobs:
                continue
            task = task_b.decode("utf-8", "replace")
            state = states.get(blob)
            if state is None:
                try:
                    state = parse_state(blobs[blob], task, f"{name}:.orc/tasks/{task}/state.yaml")
                except StateUnreadable as exc:
                    state = exc.message
                states[blob] = state
            entry = tasks.setdefault(task, TeamTask(task, None, [], []))
            entry.branches.append(name)
            if isinstance(state, str):
                entry.problems.append(state)
            elif entry.state is None or _newer(state, entry.state):
                tasks[task] = entry._replace(state=state)
    return [tasks[k] for k in sorted(tasks)]
