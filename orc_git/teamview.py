"""The team's view of tasks: every remote-tracking branch's committed task state, read straight
from git objects (nothing checked out), through GitPython's one persistent ``cat-file --batch``.

Branches mostly share trees and blobs, so each tree and each state blob is read once, whatever
the number of branches; hundreds of branches cost little more than their distinct states.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orc_git.state import StateUnreadable, TaskState, parse_state


@dataclass
class TeamTask:
    task_id: str
    state: TaskState | None  # the most recently updated state across branches
    branches: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _newer(a: TaskState, b: TaskState) -> bool:
    """Later update wins; within one second, the higher fencing token (the later lease)."""
    return (a.updated_at, a.token or -1) > (b.updated_at, b.token or -1)


def team_states(worktree: Path) -> list[TeamTask]:
    import git  # GitPython: only this command pays its import

    repo = git.Repo(worktree)
    tasks: dict[str, TeamTask] = {}
    trees_seen: dict[str, list[tuple[str, str]]] = {}  # tasks tree sha -> [(task, blob sha)]
    blobs_seen: dict[str, TaskState | str] = {}
    try:
        for ref in repo.refs:
            if not isinstance(ref, git.RemoteReference) or ref.remote_head == "HEAD":
                continue
            try:
                tasks_tree = ref.commit.tree / ".orc" / "tasks"
            except (KeyError, ValueError):
                continue
            entries = trees_seen.get(tasks_tree.hexsha)
            if entries is None:
                entries = []
                for sub in tasks_tree.trees:
                    try:
                        entries.append((sub.name, (sub / "state.yaml").hexsha))
                    except KeyError:
                        continue
                trees_seen[tasks_tree.hexsha] = entries
            for task, blob_sha in entries:
                state = blobs_seen.get(blob_sha)
                if state is None:
                    raw = repo.odb.stream(bytes.fromhex(blob_sha)).read()
                    try:
                        state = parse_state(raw, task, f"{ref.name}:.orc/tasks/{task}/state.yaml")
                    except StateUnreadable as exc:
                        state = exc.message
                    blobs_seen[blob_sha] = state
                entry = tasks.setdefault(task, TeamTask(task, None))
                entry.branches.append(ref.name)
                if isinstance(state, str):
                    entry.problems.append(state)
                elif entry.state is None or _newer(state, entry.state):
                    entry.state = state
    finally:
        repo.close()
    return [tasks[k] for k in sorted(tasks)]
