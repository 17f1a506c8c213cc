"""The team's view of tasks: every remote-tracking branch's committed task state, read straight
from git objects (nothing checked out), through GitPython's one persistent ``cat-file --batch``.

Branches mostly share trees and blobs, so every object is read once, whatever the number of
branches: a branch that moved one task costs its commit, three small trees and one blob.  Trees
are parsed here from their raw bytes; GitPython's tree objects cost seconds at this scale.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from orc_git.state import StateUnreadable, TaskState, parse_state

if TYPE_CHECKING:
    import git


class TeamTask(NamedTuple):
    task_id: str
    state: TaskState | None  # the most recently updated state across branches
    branches: list[str]
    problems: list[str]


_ENTRY = re.compile(rb"(\d+) ([^\0]*)\0(.{20})", re.DOTALL)


def _entries(raw: bytes, trees: bool = False) -> dict[bytes, str]:
    """A raw tree object's entries (only subtrees with ``trees``): name -> hex sha."""
    return {m[2]: m[3].hex() for m in _ENTRY.finditer(raw) if not trees or m[1] == b"40000"}


class _Objects:
    def __init__(self, repo: git.Repo) -> None:
        self.odb = repo.odb
        self.cache: dict[str, bytes] = {}

    def raw(self, sha: str) -> bytes:
        data = self.cache.get(sha)
        if data is None:
            data = self.cache[sha] = self.odb.stream(bytes.fromhex(sha)).read()
        return data

    def path(self, commit: str, *names: bytes) -> str | None:
        header = self.raw(commit).split(b"\n", 1)[0]
        sha: str | None = header[5:].decode() if header.startswith(b"tree ") else None
        for name in names:
            if sha is None:
                return None
            sha = _entries(self.raw(sha)).get(name)
        return sha


def _newer(a: TaskState, b: TaskState) -> bool:
    """Later update wins; within one second, the higher fencing token (the later lease)."""
    return (a.updated_at, a.token or -1) > (b.updated_at, b.token or -1)


def team_states(worktree: Path) -> list[TeamTask]:
    import git  # GitPython: only this command pays its import

    repo = git.Repo(worktree)
    try:
        refs = repo.git.for_each_ref("--format=%(objectname) %(symref) %(refname:short)",
                                     "refs/remotes").splitlines()
        objects = _Objects(repo)
        tasks: dict[str, TeamTask] = {}
        states: dict[str, TaskState | str] = {}
        for line in refs:
            sha, symref, name = [*line.split(" ", 2), "", ""][:3]
            if symref or not name:
                continue  # origin/HEAD points at a branch listed anyway
            tasks_tree = objects.path(sha, b".orc", b"tasks")
            if tasks_tree is None:
                continue
            for task_b, sub in _entries(objects.raw(tasks_tree), trees=True).items():
                blob = _entries(objects.raw(sub)).get(b"state.yaml")
                if blob is None:
                    continue
                task = task_b.decode("utf-8", "replace")
                state = states.get(blob)
                if state is None:
                    try:
                        state = parse_state(objects.raw(blob), task,
                                            f"{name}:.orc/tasks/{task}/state.yaml")
                    except StateUnreadable as exc:
                        state = exc.message
                    states[blob] = state
                entry = tasks.setdefault(task, TeamTask(task, None, [], []))
                entry.branches.append(name)
                if isinstance(state, str):
                    entry.problems.append(state)
                elif entry.state is None or _newer(state, entry.state):
                    tasks[task] = entry._replace(state=state)
    finally:
        repo.close()
    return [tasks[k] for k in sorted(tasks)]
