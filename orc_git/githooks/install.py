"""Putting orc's hook shims where git runs them, and taking them away again.

Conventions are those of pre-commit and lefthook, with their sharp edges filed off:

- The hooks directory is git's answer (``git rev-parse --git-path hooks`` in the current
  worktree), so ``core.hooksPath`` (absolute, relative: then per worktree) and linked worktrees
  work without orc knowing their rules.
- A shim is recognised by its marker line (:data:`MARKER`), whatever version wrote it.
- A hook that is not ours is *chained*, never lost: it is renamed to ``<hook>.orc-previous``
  (a rename keeps its mode bits, and moves a symlink as a symlink) and the shim runs it first.
  Re-installing rewrites our shim in place and never moves it aside.  If a foreign hook sits in
  front of an existing ``.orc-previous`` (another tool replaced our shim), installing refuses
  that hook unless ``force``; then the older ``.orc-previous`` is kept as
  ``<hook>.orc-previous.N`` rather than overwritten.
- The shim has the absolute path of the installing Python baked in, so a GUI client running git
  with a bare PATH still finds it; the template is ``orc_git/templates/hooks/shim.sh``.
- ``uninstall`` removes only our shims and renames ``.orc-previous`` back.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from orc_git import safefs
from orc_git.errors import NotARepository, StorageError, UnsafePath
from orc_git.repo import find_worktree

HOOKS = ("post-checkout", "post-merge", "post-rewrite", "pre-commit", "pre-push")
MARKER = "# orc-git hook shim"  # the template's second line: "# orc-git hook shim v1"
PREVIOUS_SUFFIX = ".orc-previous"
_GIT_TIMEOUT = 10


@dataclass
class HookState:
    """One hook in the hooks directory, and what the last operation did to it."""

    name: str
    path: Path
    state: str  # installed | foreign | missing
    chained: bool  # our shim is in place and runs <hook>.orc-previous
    previous: Path | None  # <hook>.orc-previous, when it exists
    python: str | None = None  # the Python our shim runs
    python_found: bool | None = None
    current: bool | None = None  # our shim is byte-for-byte what install writes now
    action: str | None = None  # installed, updated, unchanged, refused, removed, restored…
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "chained": self.chained,
                "path": str(self.path), "previous": str(self.previous) if self.previous else None,
                "python": self.python, "python_found": self.python_found,
                "current": self.current, "action": self.action, "message": self.message}


@dataclass
class HooksReport:
    hooks_dir: Path
    core_hooks_path: str | None  # the core.hooksPath setting, as written, when set
    hooks: list[HookState] = field(default_factory=list)

    @property
    def refused(self) -> list[HookState]:
        return [h for h in self.hooks if h.action == "refused"]


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=_GIT_TIMEOUT)
    except FileNotFoundError:
        raise StorageError("git is not installed (or not on PATH)") from None
    except subprocess.TimeoutExpired:
        command = shlex.join(["git", *args])
        raise StorageError(f"`{command}` took more than {_GIT_TIMEOUT} s") from None
    except OSError as exc:
        raise StorageError(f"cannot run git: {exc.strerror}") from None


def hooks_location(cwd: str | os.PathLike[str] | None = None) -> tuple[Path, str | None]:
    """The directory git runs this worktree's hooks from, and ``core.hooksPath`` if set."""
    here = Path(cwd if cwd is not None else os.getcwd()).absolute()
    if not here.is_dir():
        raise NotARepository(f"{here} is not a directory")
    proc = _git(["rev-parse", "--path-format=absolute", "--git-path", "hooks"], here)
    if proc.returncode != 0:
        if "not a git repository" in proc.stderr:
            raise NotARepository(f"{here} is not inside a git repository: git hooks "
                                 "belong to a repository (run `git init` first)")
        raise StorageError(f"git cannot say where its hooks go: {proc.stderr.strip()}")
    # git < 2.31 echoes the unknown --path-format option and answers relative to ``here``
    lines = proc.stdout.strip().splitlines()
    hooks_dir = Path(os.path.normpath(here / lines[-1])) if lines else here / ".git" / "hooks"
    setting = _git(["config", "--get", "core.hooksPath"], here)
    configured = (setting.stdout.strip() or None) if setting.returncode == 0 else None
    if configured is not None:
        _check_inside(configured, here)
    return hooks_dir, configured


def _check_inside(configured: str, here: Path) -> None:
    """A ``core.hooksPath`` inside the worktree (``.githooks``, ``.husky``) may be a directory
    the clone itself brought: if it resolves outside the worktree (a committed ``.githooks ->
    ../..`` link), orc would write its shims there.  Links that stay inside, and hooks
    directories outside the worktree (the user's own), are fine."""
    top = find_worktree(here)
    if top is None:
        return
    path = Path(os.path.normpath(top / os.path.expanduser(configured)))
    if os.path.commonpath([top, path]) != str(top):
        return
    real, real_top = os.path.realpath(path), os.path.realpath(top)
    if os.path.commonpath([real_top, real]) != real_top:
        raise UnsafePath(f"{path} (core.hooksPath) resolves to {real}, outside the repository "
                         "(a symbolic link); refusing to install hooks there")


def template() -> str:
    return resources.files("orc_git").joinpath("templates/hooks/shim.sh").read_text("utf-8")


def render(hook: str, python: str) -> str:
    """The shim for ``hook``: the template with the hook's name and the Python filled in."""
    return (template().replace("@ORC_HOOK@", shlex.quote(hook), 1)
            .replace("@ORC_PYTHON@", shlex.quote(python), 1))


def default_python() -> str:
    """The running interpreter, as invoked: a venv's ``bin/python`` symlink is kept, not
    resolved, or the shim would run the base Python without the venv's packages."""
    return os.path.abspath(sys.executable) if sys.executable else "python3"


def _read(path: Path, limit: int = 1 << 20) -> str | None:
    """A hook's text; a link to a file is followed (hooks directories are the user's or git's),
    but a FIFO or a device is not read: it would block."""
    try:
        raw = safefs.read_regular(path, limit, follow=True)
    except OSError:
        return None
    return None if raw is None else raw.decode("utf-8", "replace")


def _head(path: Path) -> str | None:
    return _read(path, 4096)


def is_shim(path: Path) -> bool:
    """Ours: a file (or a link to one) whose first lines carry the marker, of any version."""
    head = _head(path)
    return head is not None and any(line.startswith(MARKER) for line in head.splitlines()[:5])


def _baked_python(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("orc_install_python="):
            try:
                words = shlex.split(line.partition("=")[2])
            except ValueError:
                return None
            return words[0] if words else None
    return None


def inspect(hooks_dir: Path, name: str, python: str | None = None) -> HookState:
    path, prev = hooks_dir / name, hooks_dir / (name + PREVIOUS_SUFFIX)
    previous = prev if os.path.lexists(prev) else None
    if not os.path.lexists(path):
        return HookState(name, path, "missing", False, previous)
    if not is_shim(path):
        return HookState(name, path, "foreign", False, previous)
    text = _read(path) or ""
    baked = _baked_python(text)
    found = None
    if baked is not None and not baked.startswith("@"):
        found = (os.access(baked, os.X_OK) and not os.path.isdir(baked)) if "/" in baked else None
    current = text == render(name, python or default_python())
    return HookState(name, path, "installed", previous is not None, previous, baked, found,
                     current)


def _write_shim(path: Path, text: str) -> None:
    """Write atomically (a temporary file renamed over the hook), mode 0755."""
    try:
        safefs.replace_file(path, text.encode("utf-8"), 0o755)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from None


def _backup_name(prev: Path) -> Path:
    n = 1
    while os.path.lexists(prev.with_name(f"{prev.name}.{n}")):
        n += 1
    return prev.with_name(f"{prev.name}.{n}")


def _rename(src: Path, dst: Path) -> None:
    try:
        os.rename(src, dst)
    except OSError as exc:
        raise StorageError(f"cannot rename {src} to {dst.name}: {exc.strerror}") from None


def _install_one(hooks_dir: Path, name: str, python: str, force: bool) -> HookState:
    state = inspect(hooks_dir, name, python)
    path, prev = state.path, hooks_dir / (name + PREVIOUS_SUFFIX)
    text = render(name, python)
    if state.state == "installed":
        if state.current:
            state.action, state.message = "unchanged", "already installed"
            return state
        _write_shim(path, text)
        action, message = "updated", "rewrote orc's shim"
    elif state.state == "foreign":
        moved = ""
        if state.previous is not None:
            if not force:
                refused = inspect(hooks_dir, name, python)
                refused.action = "refused"
                refused.message = (
                    f"{path} is not orc's hook, and {prev.name} (the hook orc chained before) is "
                    f"still there: both left alone. Move one of them away, or re-run with "
                    f"--force to chain {name} and keep {prev.name} as {_backup_name(prev).name}")
                return refused
            backup = _backup_name(prev)
            _rename(prev, backup)
            moved = f"; the older {prev.name} is kept as {backup.name}"
        _rename(path, prev)
        try:
            _write_shim(path, text)
        except StorageError:
            os.rename(prev, path)  # put the user's hook back where git runs it
            raise
        action, message = "installed", f"installed; your previous hook runs first ({prev.name})" \
                                       + moved
    else:
        _write_shim(path, text)
        action = "installed"
        message = f"installed; chains {prev.name}" if state.previous else "installed"
    done = inspect(hooks_dir, name, python)
    done.action, done.message = action, message
    return done


def install(cwd: str | os.PathLike[str] | None = None, *, force: bool = False,
            python: str | None = None, hooks: tuple[str, ...] = HOOKS) -> HooksReport:
    """Install (or refresh) every shim; ``python`` is the interpreter the shims run (default:
    this one). A refused hook is reported in the result (``action == "refused"``), not raised,
    so one odd hook does not stop the others."""
    hooks_dir, setting = hooks_location(cwd)
    py = python if python is not None else default_python()
    if "/" in py:
        py = os.path.abspath(py)
    try:
        hooks_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {hooks_dir}: {exc.strerror}") from None
    report = HooksReport(hooks_dir, setting)
    report.hooks = [_install_one(hooks_dir, name, py, force) for name in hooks]
    return report


def uninstall(cwd: str | os.PathLike[str] | None = None,
              hooks: tuple[str, ...] = HOOKS) -> HooksReport:
    """Remove our shims and rename each ``<hook>.orc-previous`` back; a hook that is not ours is
    left alone (and so is its ``.orc-previous``, which would otherwise overwrite it)."""
    hooks_dir, setting = hooks_location(cwd)
    report = HooksReport(hooks_dir, setting)
    for name in hooks:
        state = inspect(hooks_dir, name)
        path = state.path
        if state.state == "foreign":
            action = "left"
            message = "not orc's hook: left alone" + (
                f" (and so is {state.previous.name})" if state.previous else "")
        else:
            if state.state == "installed":
                try:
                    os.unlink(path)
                except OSError as exc:
                    raise StorageError(f"cannot remove {path}: {exc.strerror}") from None
            if state.previous is not None:
                _rename(state.previous, path)
                action, message = "restored", f"restored your hook from {state.previous.name}"
            elif state.state == "installed":
                action, message = "removed", "removed"
            else:
                action, message = "absent", "not installed"
        done = inspect(hooks_dir, name)
        done.action, done.message = action, message
        report.hooks.append(done)
    return report


def status(cwd: str | os.PathLike[str] | None = None,
           hooks: tuple[str, ...] = HOOKS) -> HooksReport:
    hooks_dir, setting = hooks_location(cwd)
    return HooksReport(hooks_dir, setting, [inspect(hooks_dir, name) for name in hooks])
