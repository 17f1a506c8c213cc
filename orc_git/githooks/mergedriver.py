"""Registering ``orc merge-state`` as git's merge driver for ``.orc/tasks/*/state.yaml``.

Two pieces, as git wants them: the driver's command in the repository's config
(``merge.orc-state.driver``, with the installing Python's path baked in like the hook shims) and
the attribute line naming it.  Both are per clone, like the hooks: the line goes to the clone's
``info/attributes`` (shared by its worktrees), not to a committed ``.gitattributes``, because two
teammates who each install would otherwise both create an untracked ``.gitattributes``, and the
second one's ``git pull`` would refuse to overwrite it.  A committed ``.gitattributes`` line is
honoured too (status reports it), and is harmless in a clone without the driver: git then merges
the file as text.  GitPython edits the config (this is not a hook path); the attributes file is a
plain list of lines.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git

from orc_git import safefs
from orc_git.errors import NotARepository, StorageError

DRIVER = "orc-state"
SECTION = f'merge "{DRIVER}"'
ATTRIBUTE = f".orc/tasks/*/state.yaml merge={DRIVER}"
_MAX_ATTRIBUTES = 1 << 20


@dataclass
class DriverState:
    """Whether the driver is configured and named by the attributes, and what was just done."""

    command: str | None  # merge.orc-state.driver as configured
    current: bool  # the configured command is the one install writes now
    attribute: bool  # .gitattributes carries the line
    attributes_path: Path
    action: str | None = None  # installed, updated, unchanged, removed, absent
    message: str | None = None

    @property
    def installed(self) -> bool:
        return self.command is not None and self.attribute

    def to_json(self) -> dict[str, Any]:
        return {"driver": DRIVER, "command": self.command, "current": self.current,
                "attribute": self.attribute, "attributes_path": str(self.attributes_path),
                "installed": self.installed, "action": self.action, "message": self.message}


def driver_command(python: str) -> str:
    return f"{shlex.quote(python)} -m orc_git merge-state %O %A %B %P"


def _repo(cwd: Path) -> git.Repo:
    try:
        return git.Repo(cwd, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise NotARepository(f"{cwd} is not inside a git repository") from None


def _attributes_path(repo: git.Repo) -> Path:
    return Path(repo.common_dir) / "info" / "attributes"


def _read_attributes(path: Path) -> list[str]:
    """The attributes file's lines; a symlink or anything but a regular file is refused: orc
    never writes through a link."""
    try:
        data = safefs.read_regular(path, _MAX_ATTRIBUTES)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from None
    if data is None:
        return []
    if len(data) > _MAX_ATTRIBUTES:
        raise StorageError(f"{path} is larger than {_MAX_ATTRIBUTES} bytes")
    return data.decode("utf-8", "surrogateescape").splitlines()


def _write_attributes(path: Path, lines: list[str]) -> None:
    data = "".join(f"{line}\n" for line in lines).encode("utf-8", "surrogateescape")
    try:
        safefs.replace_file(path, data)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from None


def _state(repo: git.Repo, python: str | None) -> DriverState:
    path = _attributes_path(repo)
    reader = repo.config_reader("repository")
    command = reader.get_value(SECTION, "driver", None) if reader.has_section(SECTION) else None
    command = None if command is None else str(command)
    current = python is not None and command == driver_command(python)
    return DriverState(command, current, ATTRIBUTE in _read_attributes(path), path)


def status(cwd: Path, python: str) -> DriverState:
    repo = _repo(cwd)
    if repo.bare:
        return DriverState(None, False, False, _attributes_path(repo))
    return _state(repo, python)


def install(cwd: Path, python: str) -> DriverState:
    repo = _repo(cwd)
    if repo.bare:
        return DriverState(None, False, False, _attributes_path(repo), "skipped",
                           "a bare repository merges nothing: no merge driver")
    before = _state(repo, python)
    if before.current and before.attribute:
        before.action, before.message = "unchanged", "already registered"
        return before
    with repo.config_writer("repository") as writer:
        writer.set_value(SECTION, "name", "orc task state (keeps the newer state)")
        writer.set_value(SECTION, "driver", driver_command(python))
    if not before.attribute:
        try:
            before.attributes_path.parent.mkdir(exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {before.attributes_path.parent}: "
                               f"{exc.strerror}") from None
        _write_attributes(before.attributes_path,
                          [*_read_attributes(before.attributes_path), ATTRIBUTE])
    done = _state(repo, python)
    done.action = "updated" if before.command is not None else "installed"
    done.message = "merge driver registered"
    return done


def uninstall(cwd: Path) -> DriverState:
    repo = _repo(cwd)
    if repo.bare:
        return DriverState(None, False, False, _attributes_path(repo), "absent")
    before = _state(repo, None)
    if before.command is None and not before.attribute:
        before.action, before.message = "absent", "not registered"
        return before
    with repo.config_writer("repository") as writer:
        if writer.has_section(SECTION):
            writer.remove_section(SECTION)
    if before.attribute:
        lines = [line for line in _read_attributes(before.attributes_path) if line != ATTRIBUTE]
        if lines:
            _write_attributes(before.attributes_path, lines)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(before.attributes_path)
    done = _state(repo, None)
    done.action, done.message = "removed", "merge driver removed"
    return done
