"""The team's view of tasks: every remote-tracking branch's committed task state, read straight
from git objects (nothing checked out) through GitPython's persistent ``git cat-file --batch``.

Three rounds whatever the number of branches: every branch's ``.orc/tasks`` tree, then every
distinct task tree, then every distinct ``state.yaml`` blob.  Branches mostly share trees and
blobs, so a branch that moved one task costs one tree and one blob more; raw tree objects are
parsed here (GitPython's ``Tree`` objects would build one Python object per entry).  Only
``orc tasks --team`` imports this module, so only it pays for importing GitPython.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import git

from orc_git.errors import StateUnreadable
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


def cat_batch(repo: git.Repo, names: Iterable[str]) -> dict[str, bytes]:
    """Objects by name (``sha`` or ``rev:path``) from the repository's one persistent
    ``cat-file --batch``; names git cannot resolve are left out."""
    out: dict[str, bytes] = {}
    read = repo.git.get_object_data
    for name in dict.fromkeys(names):
        try:
            out[name] = read(name)[3]
        except ValueError:  # "<name> missing": not in that commit
            continue
    return out


def _newer(a: TaskState, b: TaskState) -> bool:
    """Later update wins; within one second, the higher fencing token (the later lease)."""
    return (a.updated_at, a.token or -1) > (b.updated_at, b.token or -1)


def team_states(worktree: Path) -> list[TeamTask]:
    repo = git.Repo(worktree)
    try:
        return _team_states(repo)
    finally:
        repo.close()  # ends the cat-file process


def _team_states(repo: git.Repo) -> list[TeamTask]:
    refs = []
    for line in repo.git.for_each_ref("--format=%(objectname) %(symref) %(refname:short)",
                                      "refs/remotes").splitlines():
        sha, symref, name = [*line.split(" ", 2), "", ""][:3]
        if name and not symref:  # origin/HEAD points at a branch listed anyway
            refs.append((sha, name))
    trees = cat_batch(repo, (f"{sha}:.orc/tasks" for sha, _ in refs))
    listing = {sha: _entries(trees[f"{sha}:.orc/tasks"], trees=True)
               for sha, _ in refs if f"{sha}:.orc/tasks" in trees}
    subtrees = cat_batch(repo, {sub for entries in listing.values()
                                    for sub in entries.values()})
    blob_of = {sub: _entries(raw).get(b"state.yaml") for sub, raw in subtrees.items()}
    blobs = cat_batch(repo, {b for b in blob_of.values() if b})
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
