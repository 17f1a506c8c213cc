"""Hostile input for tests: clones whose committed content points outside them (symlinked .orc
directories, task directories, state files, .gitignore) or whose files would block a reader
(FIFOs), used by ``tests/test_hostile_repo.py``; and hostile text (a lone surrogate, control and
bidi characters, a newline that would start a fake ``orc:`` line) with the checks that it was
shown escaped, used wherever a field from a file or a lease is printed."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conftest import git, tree_snapshot

# A clone of a repository whose committed content points outside it (symlinked .orc directories,
# task directories, state files, .gitignore) or whose files would block a reader (FIFOs).  Each
# case is a small function that arranges one hostile entry; add a case by adding a function to
# HOSTILE_CASES.  Every case gets the same layout:
#
#     <base>/origin   the repository as committed (hostile entries included)
#     <base>/clone    a `git clone` of it: where the commands run
#     <base>/victim   a directory outside both, which nothing may change
#     <base>/home     the ORC_HOME used

VICTIM_FILES = {
    "app/lock.yaml": b"this: [is not a lease\n",
    "app/state.yaml": b"task_id: app\nstatus: running\n",
    "T1/state.yaml": b"precious: state\n",
    "state.yaml": b"precious: state\n",
    "task.yaml": b"precious: task\n",
    "config.yaml": b"mode: p2p\n",
    "gitignore": b"precious\n",
    "shared/config.yaml": b"mode: p2p\n",
    "tasks/app/lock.yaml": b"this: [is not a lease\n",
}


@dataclass
class HostileRepo:
    case: str
    origin: Path
    path: Path  # the clone, where commands run
    victim: Path
    home: Path
    env: dict[str, str]

    def snapshot(self) -> dict[str, str]:
        return tree_snapshot(self.victim)


@dataclass
class HostileSetup:
    """What a case does: ``commit`` arranges the origin before its commit (committed entries);
    ``local`` arranges the clone afterwards (what git cannot carry: FIFOs, local config)."""

    commit: Callable[[Path, Path], None] | None = None
    local: Callable[[HostileRepo], None] | None = None


def _link(path: Path, target: str | Path) -> None:
    if path.is_dir() and not path.is_symlink():
        import shutil

        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def _fifo(path: Path) -> None:
    if os.path.lexists(path):
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


HOSTILE_CASES: dict[str, HostileSetup] = {
    # committed symlinks out of the repository
    "orc-dir-link": HostileSetup(commit=lambda o, v: _link(o / ".orc", "../victim")),
    "tasks-link": HostileSetup(commit=lambda o, v: _link(o / ".orc" / "tasks", "../../victim")),
    "shared-link": HostileSetup(
        commit=lambda o, v: _link(o / ".orc" / "shared", "../../victim/shared")),
    "local-link": HostileSetup(commit=lambda o, v: _link(o / ".orc" / "local", "../../victim")),
    "task-dir-link": HostileSetup(
        commit=lambda o, v: _link(o / ".orc" / "tasks" / "T1", "../../../victim/T1")),
    "state-link": HostileSetup(commit=lambda o, v: (
        _link(o / ".orc" / "tasks" / "T1" / "state.yaml", "../../../../victim/state.yaml"),
        _link(o / ".orc" / "tasks" / "T1" / "task.yaml", "../../../../victim/task.yaml"))),
    "lock-link": HostileSetup(
        commit=lambda o, v: _link(o / ".orc" / "tasks" / "T1" / "lock.yaml", v / "app/lock.yaml")),
    "gitignore-link": HostileSetup(
        commit=lambda o, v: _link(o / ".gitignore", "../victim/gitignore")),
    "config-link": HostileSetup(
        commit=lambda o, v: _link(o / ".orc" / "shared" / "config.yaml",
                                  "../../../victim/config.yaml")),
    # FIFOs: a committed symlink to one, or one in the clone / ORC_HOME
    "config-link-to-fifo": HostileSetup(
        commit=lambda o, v: (_fifo(v / "fifo"),
                             _link(o / ".orc" / "shared" / "config.yaml", v / "fifo"))),
    "home-config-fifo": HostileSetup(local=lambda h: _fifo(h.home / "config.yaml")),
    "home-config-link-to-fifo": HostileSetup(
        local=lambda h: (_fifo(h.victim / "fifo"),
                         _link(h.home / "config.yaml", h.victim / "fifo"))),
    "local-config-fifo": HostileSetup(local=lambda h: _fifo(h.path / ".orc/local/config.yaml")),
    "state-fifo": HostileSetup(local=lambda h: (_fifo(h.path / ".orc/tasks/T1/state.yaml"),
                                                _fifo(h.path / ".orc/tasks/T1/task.yaml"))),
    "lock-fifo": HostileSetup(local=lambda h: (_fifo(h.path / ".orc/tasks/T1/lock.yaml"),
                                               _fifo(h.path / ".orc/tasks/T1/lock.fence"))),
    "gitignore-fifo": HostileSetup(local=lambda h: _fifo(h.path / ".gitignore")),
    "cache-fifo": HostileSetup(local=lambda h: _fifo(_yaml_cache_file(h.home))),
    # a hooks directory (core.hooksPath) committed as a symlink out of the repository
    "hooks-dir-link": HostileSetup(
        commit=lambda o, v: ((v / "hooks").mkdir(), _link(o / ".githooks", "../victim/hooks")),
        local=lambda h: git("config", "core.hooksPath", ".githooks", cwd=h.path)),
}


def _yaml_cache_file(home: Path) -> Path:
    """Where :func:`orc_git.config.load_yaml_file` caches ``$ORC_HOME/config.yaml``."""
    name = f"yaml/{home / 'config.yaml'}".replace(os.sep, "%")
    return home / "cache" / f"{name}.json"


def make_hostile_repo(base: Path, case: str) -> HostileRepo:
    """Build the case's origin, commit it, clone it, then arrange what git cannot carry."""
    setup = HOSTILE_CASES[case]
    origin, clone, victim, home = (base / n for n in ("origin", "clone", "victim", "home"))
    for rel, data in VICTIM_FILES.items():
        (victim / rel).parent.mkdir(parents=True, exist_ok=True)
        (victim / rel).write_bytes(data)
    home.mkdir(parents=True)
    (home / "config.yaml").write_text("identity: {user: alice}\n")
    origin.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=origin)
    (origin / ".orc" / "shared").mkdir(parents=True)
    (origin / ".orc" / "shared" / "config.yaml").write_text("mode: p2p\n")
    (origin / ".orc" / "tasks" / "T1").mkdir(parents=True)
    (origin / ".orc" / "tasks" / "T1" / "task.yaml").write_text(
        "id: T1\ntitle: one\ncreated_by: bob\ncreated_at: \"2024-05-01T10:00:00Z\"\n")
    (origin / ".orc" / "tasks" / "T1" / "state.yaml").write_text(
        "task_id: T1\nstatus: running\nupdated_at: \"2024-05-01T10:00:00Z\"\nupdated_by: bob\n"
        "host: elsewhere\n")
    (origin / ".gitignore").write_text("# nothing of orc's yet\n")
    if setup.commit is not None:
        setup.commit(origin, victim)
    git("add", "-A", "-f", cwd=origin)
    git("commit", "-q", "-m", f"hostile: {case}", cwd=origin)
    git("clone", "-q", str(origin), str(clone), cwd=base)
    hostile = HostileRepo(case, origin, clone, victim, home, {"ORC_HOME": str(home)})
    if setup.local is not None:
        setup.local(hostile)
    return hostile


# -- hostile text ---------------------------------------------------------------------------------

HOSTILE = "\ud800x\n\x1b[31morc: fake line\u202e\u2066\x9b"
RAW = ("\x1b", "\u202e", "\u2066", "\x9b", "\ud800", "\r")


def assert_no_raw(text: str) -> None:
    """No raw control or bidi character, and no line that a field's newline started."""
    for raw in RAW:
        assert raw not in text, (raw, text)
    for line in text.splitlines():
        assert not line.lstrip().startswith(("orc: fake", "[31morc")), text


def assert_strict_json(value: object) -> None:
    """Every string encodes as UTF-8: no lone surrogate reaches a JSON consumer."""
    if isinstance(value, str):
        value.encode("utf-8")
        assert "\ud800" not in value
    elif isinstance(value, dict):
        for k, v in value.items():
            assert_strict_json(k)
            assert_strict_json(v)
    elif isinstance(value, list):
        for v in value:
            assert_strict_json(v)
