"""Every read and write command run against a hostile repository (built by ``tests/hostile.py``).

A clone whose committed ``.orc`` entries point outside it, or whose files are FIFOs, must never
make ``orc`` (or git, through orc's hooks) change anything outside the repository, hang, or show
a traceback; each command exits with the status ``docs/security.md`` documents: 3 when orc
meets a path it will not follow or a file that is not a regular file, otherwise what the command
answers in a harmless clone.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hostile import HOSTILE_CASES, HostileRepo, make_hostile_repo


@pytest.fixture
def hostile_repo(tmp_path: Path) -> Callable[[str], HostileRepo]:
    """``hostile_repo(case)``: a fresh clone of a hostile repository (see HOSTILE_CASES)."""
    return lambda case: make_hostile_repo(tmp_path / case, case)


TIMEOUT = 20.0  # far above any command's run time here; hitting it means something blocked


@dataclass(frozen=True)
class Step:
    name: str
    argv: tuple[str, ...]
    ok: int = 0  # the exit status in a harmless clone

    def run(self, repo: HostileRepo) -> subprocess.CompletedProcess[str]:
        import os

        argv = list(self.argv)
        if argv[0] == "orc":
            argv = [sys.executable, "-m", "orc_git", *argv[1:]]
        return subprocess.run(argv, cwd=repo.path, capture_output=True, text=True,
                              env={**os.environ, **repo.env}, timeout=TIMEOUT,
                              stdin=subprocess.DEVNULL)


# One sequence, run in order on one clone: read commands, then every lease and state write, then
# the hooks and the git commands that run them.
STEPS = [
    Step("mode", ("orc", "mode")),
    Step("init", ("orc", "init")),
    Step("lock status", ("orc", "lock", "status", "T1")),
    Step("lock list", ("orc", "lock", "list")),
    Step("lock acquire", ("orc", "lock", "acquire", "T1")),
    Step("lock heartbeat", ("orc", "lock", "heartbeat", "T1")),
    Step("task state", ("orc", "task", "state", "T1", "--status", "running", "--phase", "x")),
    Step("task show", ("orc", "task", "show", "T1")),
    Step("tasks", ("orc", "tasks")),
    Step("lock release", ("orc", "lock", "release", "T1")),
    Step("lock steal", ("orc", "lock", "steal", "T1")),
    Step("lock release stolen", ("orc", "lock", "release", "T1")),
    Step("lock run", ("orc", "lock", "run", "T1", "--", sys.executable, "-c", "pass")),
    Step("lock wait", ("orc", "lock", "wait", "T1", "--timeout", "1")),
    Step("lock clean", ("orc", "lock", "clean")),
    Step("lock acquire new", ("orc", "lock", "acquire", "NEWTASK")),
    Step("lock release new", ("orc", "lock", "release", "NEWTASK")),
    Step("task new outside", ("orc", "task", "new", "OUTSIDE-T")),
    Step("task new existing", ("orc", "task", "new", "T1"), ok=2),
    Step("hooks install", ("orc", "hooks", "install")),
    Step("git checkout", ("git", "checkout", "-q", "-b", "other")),
    Step("git commit", ("git", "commit", "-q", "--allow-empty", "-m", "x")),
]
NAMES = [s.name for s in STEPS]
ORC_STEPS = [n for n in NAMES if not n.startswith(("git ", "hooks "))]
T1_STEPS = ["lock status", "lock acquire", "lock heartbeat", "task state", "task show",
            "lock release", "lock steal", "lock release stolen", "lock run", "lock wait",
            "task new existing"]

# Per case: the steps whose exit status differs from the harmless clone's, and what it is.
# Refusing a hostile path is 3 (an I/O failure: the repository's files are not usable), the
# same status as an unreadable config.
EXPECTED: dict[str, dict[str, int]] = {
    # orc's own directories are links: every orc command refuses; installing the hooks (git's
    # directory) still works, and the hooks then warn and let git go on
    "orc-dir-link": dict.fromkeys(ORC_STEPS, 3),
    "tasks-link": dict.fromkeys(ORC_STEPS, 3),
    "shared-link": dict.fromkeys(ORC_STEPS, 3),
    "local-link": dict.fromkeys(ORC_STEPS, 3),
    # a task directory that is a link: what touches that task refuses, the rest skips it
    "task-dir-link": {**dict.fromkeys(T1_STEPS, 3)},
    # state.yaml / task.yaml are links: their readers and writers refuse; leases are unaffected
    "state-link": {"task state": 3, "task show": 3, "task new existing": 3},
    # a lease that is a link reads as a stale unreadable lease and is taken over (replaced, not
    # followed): see test_hostile_leases.py
    "lock-link": {},
    # `orc init` refuses to append through a linked (or non-regular) .gitignore
    "gitignore-link": {"init": 3},
    "gitignore-fifo": {"init": 3},
    # configs that are links inside the repository, or not regular files anywhere
    "config-link": dict.fromkeys(ORC_STEPS, 3),
    "config-link-to-fifo": dict.fromkeys(ORC_STEPS, 3),
    "home-config-fifo": dict.fromkeys(ORC_STEPS, 3),
    "home-config-link-to-fifo": dict.fromkeys(ORC_STEPS, 3),
    "local-config-fifo": dict.fromkeys(ORC_STEPS, 3),
    # a cache that cannot be read is not used
    "cache-fifo": {},
    # task files that are FIFOs: unreadable state; a fence that is a FIFO stops every lease
    # change of that task
    "state-fifo": {"task state": 3, "task show": 3, "task new existing": 3},
    "lock-fifo": dict.fromkeys(["lock acquire", "lock heartbeat", "task state", "lock release",
                                "lock steal", "lock release stolen", "lock run", "lock clean"], 3),
    "hooks-dir-link": {"hooks install": 3},
}


def test_every_case_has_expectations() -> None:
    assert set(EXPECTED) == set(HOSTILE_CASES)


@pytest.mark.parametrize("case", sorted(HOSTILE_CASES))
def test_hostile_repository(case: str, hostile_repo: Callable[[str], HostileRepo]) -> None:
    repo = hostile_repo(case)
    before = repo.snapshot()
    expected = EXPECTED[case]
    problems: list[str] = []
    for step in STEPS:
        try:
            proc = step.run(repo)
        except subprocess.TimeoutExpired:
            problems.append(f"{step.name}: still running after {TIMEOUT} s (blocked)")
            break  # what comes next would most likely block too
        want = expected.get(step.name, step.ok)
        said = (proc.stderr.strip().splitlines() or [""])[-1][:300]
        if "Traceback" in proc.stderr:
            problems.append(f"{step.name}: traceback: {proc.stderr[-600:]}")
        if proc.returncode != want:
            problems.append(f"{step.name}: exit {proc.returncode}, expected {want} ({said})")
        if step.argv[0] == "git":
            orc_lines = [line for line in proc.stderr.splitlines() if "orc" in line]
            if len(orc_lines) > 6:
                problems.append(f"{step.name}: the hooks said too much: {orc_lines}")
        after = repo.snapshot()
        if after != before:
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            problems.append(f"{step.name}: changed the victim directory: {changed}")
            before = after
    assert not problems, f"{case}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("case", ["tasks-link", "task-dir-link", "state-link"])
def test_python_api_never_writes_outside(case: str, hostile_repo: Callable[[str], HostileRepo],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """``orc_git.hold`` (its heartbeat and release included) and ``orc_git.set_state``, as an
    executor calls them: refused with UnsafePath or unreadable state, nothing changed outside."""
    import orc_git
    from orc_git.errors import StateUnreadable, StorageError

    repo = hostile_repo(case)
    for key, value in repo.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ORC_MODE", "p2p")
    before = repo.snapshot()
    with pytest.raises((StorageError, StateUnreadable)), \
            orc_git.hold("T1", repo=repo.path) as lease:
        lease.beat()
        orc_git.set_state("T1", lease=lease, status="running", repo=repo.path)
    with pytest.raises((StorageError, StateUnreadable)):
        orc_git.set_state("T1", status="running", repo=repo.path)
    assert repo.snapshot() == before
