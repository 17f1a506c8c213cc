"""``orc merge-state``: git's merge driver for ``.orc/tasks/*/state.yaml``.

Two branches that both wrote a task's state would otherwise conflict on every line (each write
changes ``updated_at``).  A state is one fact, not a text: the driver keeps one side whole.  Within
one lock domain the side written under the higher fencing token is the newer holder's and wins;
tokens of different domains mean nothing to each other, so there (and on a tie) the later
``updated_at`` wins.  A side that is not a readable state is never guessed at: the driver leaves
git's usual conflict markers and exits 1, so the user decides.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from orc_git import flatyaml
from orc_git.errors import MergeConflict, StateUnreadable
from orc_git.locking.info import parse_rfc3339
from orc_git.state import MAX_BYTES, TaskState, parse_state


@dataclass(frozen=True)
class Side:
    """One side of the merge: its bytes, its parsed state and the domain its token counts in."""

    name: str
    raw: bytes
    state: TaskState
    domain: str | None
    updated: float


@dataclass(frozen=True)
class Decision:
    winner: Side
    loser: Side
    reason: str


def _side(name: str, raw: bytes) -> Side:
    """Parse one side; a side orc cannot read raises MergeConflict naming it."""
    try:
        data = flatyaml.load(raw, MAX_BYTES)
        task_id = data.get("task_id")
        if not isinstance(task_id, str):
            raise ValueError("it names no task_id")
        state = parse_state(raw, task_id, where=f"{name}'s state.yaml")
        domain = data.get("lock_domain")
        if domain is not None and not isinstance(domain, str):
            raise ValueError("lock_domain is not a string")
    except (flatyaml.NotFlatYaml, ValueError) as exc:
        raise MergeConflict(f"{name}'s state.yaml is unreadable: {exc}") from None
    except StateUnreadable as exc:
        raise MergeConflict(exc.message) from None
    updated = parse_rfc3339(state.updated_at)
    if updated is None:
        raise MergeConflict(f"{name}'s state.yaml has no valid updated_at "
                            f"({state.updated_at!r})")
    return Side(name, raw, state, domain, updated)


def decide(ours_raw: bytes, theirs_raw: bytes) -> Decision:
    """Which side of a state.yaml conflict to keep, and why (in words for the user)."""
    ours, theirs = _side("ours", ours_raw), _side("theirs", theirs_raw)
    if ours.state.task_id != theirs.state.task_id:
        raise MergeConflict(f"the two sides are states of different tasks "
                            f"({ours.state.task_id} and {theirs.state.task_id})")
    a, b = ours.state.token, theirs.state.token
    if (ours.domain is not None and ours.domain == theirs.domain and a is not None
            and b is not None and a != b):
        winner, loser = (ours, theirs) if a > b else (theirs, ours)
        return Decision(winner, loser, f"fencing token {winner.state.token} > "
                                       f"{loser.state.token} in lock domain {winner.domain}")
    why = ("same token" if a == b and ours.domain == theirs.domain and a is not None
           else "different lock domains" if ours.domain != theirs.domain else "no tokens")
    if theirs.updated > ours.updated:
        return Decision(theirs, ours, f"updated later ({theirs.state.updated_at}; {why})")
    return Decision(ours, theirs, f"updated later or at the same time "
                                  f"({ours.state.updated_at}; {why})")


def _leave_conflict(base: Path, ours: Path, theirs: Path) -> None:
    """git's own conflict markers in OURS, as if no driver were configured."""
    subprocess.run(["git", "merge-file", "-L", "ours", "-L", "base", "-L", "theirs",
                    str(ours), str(base), str(theirs)], capture_output=True, check=False)


def merge_files(base: Path, ours: Path, theirs: Path) -> Decision:
    """Write the winning side into OURS (git's ``%A``); on MergeConflict OURS gets markers."""
    try:
        ours_raw, theirs_raw = ours.read_bytes(), theirs.read_bytes()
    except OSError as exc:
        raise MergeConflict(f"cannot read a side of the merge: {exc.strerror}") from None
    try:
        decision = decide(ours_raw, theirs_raw)
    except MergeConflict:
        _leave_conflict(base, ours, theirs)
        raise
    if decision.winner.name == "theirs":
        ours.write_bytes(theirs_raw)
    return decision
