"""The user's own config file (``~/.orc/config.yaml``, ``$ORC_HOME`` respected), where
``orc team login`` keeps the server URL and the token.

Written whole and atomically (a temporary file in the same directory, renamed over the old one),
mode 0600 from the first byte, since it holds a bearer token; every other key is kept (comments
are not: the file is read and written as YAML data).  The directory is created 0700.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from orc_git.config import load_yaml_file
from orc_git.errors import ConfigError, StorageError
from orc_git.home import orc_home


def path() -> Path:
    return orc_home() / "config.yaml"


def read() -> dict[str, Any]:
    data = load_yaml_file(path(), follow=True)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path()} must hold a YAML mapping (key: value); fix or move it "
                          "before `orc team login` writes to it")
    return data


def write(data: dict[str, Any]) -> Path:
    target = path()
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        real = target.resolve()  # ORC_HOME may be a link; the file itself may be one too
        fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=".config.yaml.")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                yaml.safe_dump(data, f, default_flow_style=False, sort_keys=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, real)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


def set_team(server_url: str, token: str) -> Path:
    data = read()
    team = data.get("team")
    if not isinstance(team, dict):
        team = data["team"] = {}
    team["server_url"] = server_url
    team["token"] = token
    return write(data)


def remove_token() -> bool:
    """Drop ``team.token`` (and an emptied ``team:``); False when there was none."""
    data = read()
    team = data.get("team")
    if not isinstance(team, dict) or "token" not in team:
        return False
    del team["token"]
    if not team:
        del data["team"]
    write(data)
    return True
