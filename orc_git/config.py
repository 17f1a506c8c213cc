"""Layered configuration and the mode it resolves to.

Layers, later wins: built-in defaults < ``.orc/shared/config.yaml`` (committed, travels with the
repository) < ``~/.orc/config.yaml`` (``ORC_HOME`` replaces ``~/.orc``) < ``.orc/local/config.yaml``
< environment.  Every value remembers the layer it came from, so ``orc mode`` can say *why*.

YAML is parsed only when a config file exists: a repository with none costs no ``import yaml``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orc_git import cache, safefs
from orc_git.errors import ConfigError
from orc_git.home import orc_home
from orc_git.repo import RepoPaths

MODES = ("solo", "p2p", "team")
DEFAULT_TTL = 60
DEFAULT_HEARTBEAT = 10.0
MAX_TTL = 86_400
MAX_CONFIG_BYTES = 1 << 20

DEFAULTS: dict[str, Any] = {"lock": {"ttl": DEFAULT_TTL, "heartbeat": DEFAULT_HEARTBEAT}}


def load_yaml_file(path: Path, follow: bool = False) -> Any:
    """Safe-load a small YAML file; every way it can be bad becomes one clear ConfigError.
    The result is cached as JSON while the file is unchanged, so hooks skip ``import yaml``.

    Opened non-blocking and read only if it is a regular file: a FIFO must not hang every orc
    command (and every git checkout with the hooks installed).  Links are followed only with
    ``follow`` (``$ORC_HOME``, the user's own directory), never inside a repository."""
    try:
        fd = safefs.open_regular(path, follow=follow)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"unreadable config {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        key = [st.st_ino, st.st_mtime_ns, st.st_size]
        name = f"yaml/{os.path.abspath(path)}"
        hit = cache.get(name, key)
        if isinstance(hit, dict) and "data" in hit:
            return hit["data"]
        try:
            raw = safefs.read_fd(fd, MAX_CONFIG_BYTES)
        except OSError as exc:
            raise ConfigError(f"unreadable config {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    data = _parse_yaml(path, raw)
    cache.put(name, key, {"data": data})
    return data


def _parse_yaml(path: Path, raw: bytes) -> Any:
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes")
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(raw, Loader=loader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{at}: {problem}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # YAML constructors raise these for `when: 2024-02-30` or `ttl: !!int x`
        raise ConfigError(f"{path} is not valid YAML: {str(exc)[:200]}") from None


def _merge(into: dict[str, Any], layer: Mapping[str, Any], source: str,
           sources: dict[str, str], prefix: str = "") -> None:
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value, source, sources, dotted + ".")
        elif isinstance(value, Mapping):
            into[key] = {}
            _merge(into[key], value, source, sources, dotted + ".")
        else:
            into[key] = value
            sources[dotted] = source


def _env_layer() -> dict[str, Any]:
    env: dict[str, Any] = {}
    if os.environ.get("ORC_MODE"):
        env["mode"] = os.environ["ORC_MODE"]
    team = {k: os.environ[v] for k, v in (("server_url", "ORC_TEAM_URL"),
                                          ("token", "ORC_TEAM_TOKEN")) if os.environ.get(v)}
    if team:
        env["team"] = team
    return env


class Config:
    def __init__(self, data: dict[str, Any], sources: dict[str, str] | None = None,
                 shared_exists: bool = False, shared_dir: Path | None = None) -> None:
        self.data = data
        self.sources = sources if sources is not None else {}
        self.shared_exists = shared_exists
        self.shared_dir = shared_dir

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    def section(self, name: str) -> dict[str, Any]:
        value = self.get(name)
        return value if isinstance(value, dict) else {}

    @property
    def ttl(self) -> int:
        value = self.get("lock.ttl", DEFAULT_TTL)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TTL:
            raise ConfigError(
                f"lock.ttl must be a whole number of seconds from 1 to {MAX_TTL} "
                f"(got {value!r} from {self.sources.get('lock.ttl', 'defaults')})"
            )
        return value

    @property
    def heartbeat(self) -> float:
        value = self.get("lock.heartbeat", DEFAULT_HEARTBEAT)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(
                f"lock.heartbeat must be a positive number of seconds (got {value!r} from "
                f"{self.sources.get('lock.heartbeat', 'defaults')})"
            )
        return float(value)

    @property
    def require_latest(self) -> bool:
        """``lock.require_latest``: refuse an acquire whose checkout lacks the last holder's
        commit (as ``--require-latest`` does)."""
        value = self.get("lock.require_latest", False)
        if not isinstance(value, bool):
            raise ConfigError(
                f"lock.require_latest must be true or false (got {value!r} from "
                f"{self.sources.get('lock.require_latest', 'defaults')})"
            )
        return value

    def resolve_mode(self) -> tuple[str, str]:
        """The mode and a sentence saying why, in the documented order of precedence."""
        mode = self.get("mode")
        if mode is not None:
            if mode not in MODES:
                raise ConfigError(
                    f"unknown mode {mode!r} from {self.sources.get('mode')}: "
                    f"use one of {', '.join(MODES)}"
                )
            return mode, f"mode: {mode} is set in {self.sources.get('mode')}"
        if self.get("team.server_url"):
            return "team", (f"a team server URL is configured in "
                            f"{self.sources.get('team.server_url')}")
        if self.shared_exists:
            return "p2p", f"{self.shared_dir} exists (it is committed with the repository)"
        return "solo", "no .orc/shared/ directory and no mode or team server configured"


def load_config(repo: RepoPaths | None) -> Config:
    data: dict[str, Any] = {"lock": dict(DEFAULTS["lock"])}
    sources: dict[str, str] = {"lock.ttl": "defaults", "lock.heartbeat": "defaults"}
    files: list[tuple[Path, bool]] = []  # (path, follow links?)
    if repo is not None:
        files.append((repo.shared_dir / "config.yaml", False))
    files.append((orc_home() / "config.yaml", True))
    if repo is not None:
        files.append((repo.local_dir / "config.yaml", False))
    for path, follow in files:
        layer = load_yaml_file(path, follow)
        if layer is None:
            continue
        if not isinstance(layer, Mapping):
            raise ConfigError(f"{path} must hold a YAML mapping (key: value), "
                              f"not {type(layer).__name__}")
        _merge(data, layer, str(path), sources)
    _merge(data, _env_layer(), "the environment", sources)
    shared = repo.shared_dir if repo is not None else None
    return Config(data, sources, bool(shared and shared.is_dir()), shared)
