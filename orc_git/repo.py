"""Where a repository's orc files live, found by reading git's own files, not by running git.

Hooks and the lock path run this on every call, so it costs a few ``stat`` calls: ``import git``
alone would cost more than a whole hook may take.  ``git`` itself is asked only for layouts the
files cannot answer (a separate git dir or a bare repository with worktrees).

Leases live in the *main* worktree's ``.orc/tasks`` so that every worktree of a clone sees the same
leases; committed task state and the shared config are read from the current worktree, where git
checked them out.

A clone can commit ``.orc`` or ``.orc/tasks`` as a symbolic link out of the repository; every
command would then read and write wherever it points.  :func:`find_repo` refuses such a
repository once per command (a few ``lstat`` calls), so everything that builds paths from
:class:`RepoPaths` builds them under real directories (``UnsafePath``, exit 3).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import NamedTuple

from orc_git.errors import NotARepository, UnsafePath
from orc_git.safefs import NOT_DIRECTORY, real_dir_problem


class RepoPaths(NamedTuple):
    worktree: Path  # top of the current worktree
    git_dir: Path  # this worktree's git dir
    common_dir: Path  # the clone's shared git dir
    main_worktree: Path  # where clone-wide orc state lives

    @property
    def orc_dir(self) -> Path:
        return self.worktree / ".orc"

    @property
    def shared_dir(self) -> Path:
        return self.worktree / ".orc" / "shared"

    @property
    def local_dir(self) -> Path:
        return self.main_worktree / ".orc" / "local"

    @property
    def lock_root(self) -> Path:
        return self.main_worktree / ".orc" / "tasks"

    @property
    def tasks_dir(self) -> Path:
        return self.worktree / ".orc" / "tasks"

    def check(self) -> RepoPaths:
        """Refuse orc directories that are links; absent ones are fine: orc creates them as
        real directories."""
        tops = dict.fromkeys((self.worktree, self.main_worktree))
        for top in tops:
            for rel in (".orc", ".orc/shared", ".orc/tasks", ".orc/local"):
                why = real_dir_problem(top / rel)
                # a file where a directory belongs cannot be written through: the config and
                # lock code report it as they always did (CONFIG_ERROR, IO_ERROR)
                if why is not None and why != NOT_DIRECTORY:
                    raise UnsafePath(f"{top / rel}: {why}; refusing to use this repository's "
                                     f"orc files (remove or fix {rel})")
        return self


def _read_gitfile(dotgit: Path) -> Path:
    try:
        text = dotgit.read_text(encoding="utf-8", errors="replace").strip()
    except OSError as exc:
        raise NotARepository(f"cannot read {dotgit}: {exc.strerror}") from None
    if not text.startswith("gitdir:"):
        raise NotARepository(f"{dotgit} is not a git file (expected 'gitdir: …')")
    target = Path(text[len("gitdir:") :].strip())
    target = target if target.is_absolute() else (dotgit.parent / target).resolve()
    if not text[len("gitdir:") :].strip() or not target.is_dir():
        # as git says: a worktree whose repository was moved or deleted is no repository
        raise NotARepository(f"{dotgit} points to {target}, which is not a git directory "
                             "(moved or deleted? `git worktree repair` can fix a moved one)")
    return target


def _common_dir(git_dir: Path) -> Path:
    try:
        rel = (git_dir / "commondir").read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return git_dir
    except OSError as exc:
        raise NotARepository(f"cannot read {git_dir / 'commondir'}: {exc.strerror}") from None
    path = Path(rel)
    return (path if path.is_absolute() else git_dir / path).resolve()


def _main_worktree(common: Path, fallback: Path) -> Path:
    if common.name == ".git":
        return common.parent
    # A separate git dir or a bare clone with worktrees: only git knows the main worktree.
    try:
        out = subprocess.run(
            ["git", "--git-dir", str(common), "worktree", "list", "--porcelain"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return fallback
    first = out.split("\n\n", 1)[0].splitlines()
    if first and first[0].startswith("worktree ") and "bare" not in first:
        return Path(first[0][len("worktree ") :])
    return common  # bare: keep clone-wide state inside the git dir itself


def find_worktree(start: Path) -> Path | None:
    """The top of the worktree ``start`` is in (where ``.git`` is), without checking anything."""
    for top in (start, *start.parents):
        if os.path.lexists(top / ".git"):
            return top
    return None


def find_repo(start: str | os.PathLike[str] | None = None) -> RepoPaths:
    here = Path(start if start is not None else os.getcwd()).absolute()
    for top in (here, *here.parents):
        dotgit = top / ".git"
        if dotgit.is_dir():
            git_dir = dotgit
        elif dotgit.is_file():
            git_dir = _read_gitfile(dotgit)
        else:
            continue
        common = _common_dir(git_dir)
        return RepoPaths(top, git_dir, common, _main_worktree(common, top)).check()
    raise NotARepository(
        f"{here} is not inside a git repository: orc-git coordinates the tasks of a git "
        "repository (run `git init` first)"
    )
