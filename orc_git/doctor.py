"""``orc doctor``'s checks: is this setup what the user thinks it is?

Every check is a :class:`Check` (a name, ok or not, one line saying what was found, and what to
do about it).  The core checks what it owns (mode, config files, identity, git hooks, plugins);
plugins add theirs through the ``orc_git_doctor`` hook, so the core never imports a plugin to
check it (the team plugin checks its server, token and outbox).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orc_git.config import load_yaml_file
from orc_git.errors import OrcError
from orc_git.home import orc_home

if TYPE_CHECKING:
    from orc_git.context import Context
    from orc_git.repo import RepoPaths

ENVIRONMENT = ("ORC_MODE", "ORC_HOME", "ORC_TEAM_URL", "ORC_TEAM_TOKEN", "ORC_HOOKS", "NO_COLOR")
"""The variables orc reads on the client side; doctor names the ones set, never their values."""


@dataclass(frozen=True)
class Check:
    """One finding.  ``detail`` says what was found; ``hint`` (for a failed check) what to run;
    ``data`` carries the same facts for ``--json``.  Never put a secret in any of them."""

    name: str
    ok: bool
    detail: str
    hint: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "hint": self.hint,
                **({"data": self.data} if self.data else {})}


def config_layers(repo: RepoPaths | None) -> list[tuple[str, Path]]:
    """The config files in the order they are merged (later wins), as ``load_config`` reads
    them."""
    layers: list[tuple[str, Path]] = []
    if repo is not None:
        layers.append(("shared", repo.shared_dir / "config.yaml"))
    layers.append(("user", orc_home() / "config.yaml"))
    if repo is not None:
        layers.append(("local", repo.local_dir / "config.yaml"))
    return layers


def check_config(repo: RepoPaths | None) -> Check:
    layers: list[dict[str, Any]] = []
    bad: list[str] = []
    for layer, path in config_layers(repo):
        entry: dict[str, Any] = {"layer": layer, "path": str(path)}
        try:
            data = load_yaml_file(path, follow=layer == "user")
        except OrcError as exc:
            entry.update(state="unreadable", problem=exc.message)
            bad.append(exc.message)
        else:
            if data is None:
                entry["state"] = "absent"
            elif not isinstance(data, dict):
                entry.update(state="unreadable", problem="not a YAML mapping")
                bad.append(f"{path} must hold a YAML mapping (key: value)")
            else:
                entry["state"] = "present"
        layers.append(entry)
    env = [name for name in ENVIRONMENT if os.environ.get(name)]
    shown = ", ".join(f"{e['path']} ({e['state']})" for e in layers)
    detail = shown + (f"; environment: {', '.join(env)}" if env else "; no ORC_* variables set")
    return Check("config", not bad, detail, "; ".join(bad) or None,
                 {"layers": layers, "environment": env})


def check_mode(ctx: Context) -> Check:
    return Check("mode", True, f"{ctx.mode} ({ctx.mode_reason})",
                 data={"mode": ctx.mode, "reason": ctx.mode_reason})


def check_identity(ctx: Context) -> Check:
    ident = ctx.identity
    names = ", ".join(n for n in (ident.display_name, ident.email) if n)
    detail = f"{ident.user}@{ident.host}" + (f" ({names})" if names else "")
    return Check("identity", True, detail,
                 data={"user": ident.user, "host": ident.host,
                       "display_name": ident.display_name, "email": ident.email})


def check_hooks(ctx: Context) -> Check:
    from orc_git.githooks.install import default_python, status

    report = status(ctx.repo.worktree)
    python = default_python()
    missing = [h.name for h in report.hooks if h.state != "installed"]
    gone = [h.name for h in report.hooks if h.state == "installed" and h.python_found is False]
    other = sorted({h.python for h in report.hooks
                    if h.state == "installed" and h.python_found and h.python != python
                    and h.python is not None})
    data = {"hooks_dir": str(report.hooks_dir), "python": python,
            "hooks": [h.to_json() for h in report.hooks]}
    needed = ctx.mode != "solo"
    if missing or gone:
        parts = [f"not installed: {', '.join(missing)}"] if missing else []
        if gone:
            parts.append(f"their Python is gone: {', '.join(gone)}")
        detail = "; ".join(parts) + f" ({report.hooks_dir})"
        if not needed:
            detail += "; solo mode does not need them"
        return Check("hooks", not needed, detail, "orc hooks install" if needed else None, data)
    detail = f"all {len(report.hooks)} installed in {report.hooks_dir}, running {python}"
    if other:
        detail = (f"all {len(report.hooks)} installed in {report.hooks_dir}, but they run "
                  f"{', '.join(other)}, not this Python ({python}): `orc hooks install` "
                  "points them here")
    return Check("hooks", True, detail, data=data)


def check_plugins(ctx: Context) -> Check:
    from orc_git.context import TEAM_INSTALL_HINT
    from orc_git.plugin.manager import BUILTIN

    records = ctx.plugins.records
    failed = [r for r in records if r.error]
    names = ", ".join(f"{r.name} ({r.distribution or '?'} {r.version or '?'})" for r in records
                      if r.name != BUILTIN) or "none besides the core's lockers"
    data = {"plugins": [{"name": r.name, "distribution": r.distribution, "version": r.version,
                         "error": r.error} for r in records]}
    if failed:
        return Check("plugins", False, "failed to load: " + "; ".join(
            f"{r.name}: {r.error}" for r in failed), "reinstall or remove the plugin", data)
    lockers = ctx.plugins.manager.hook.orc_git_locker.get_hookimpls()
    if ctx.mode == "team" and not [h for h in lockers if h.plugin_name != BUILTIN]:
        return Check("plugins", False, f"{names}; team mode has no locker", TEAM_INSTALL_HINT,
                     data)
    return Check("plugins", True, names, data=data)


def _guarded(name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except OrcError as exc:
        return Check(name, False, exc.message)


def plugin_checks(ctx: Context) -> list[Check]:
    """What plugins add (``orc_git_doctor``); a plugin that raises is one failed check."""
    hook = ctx.plugins.manager.hook.orc_git_doctor
    checks: list[Check] = []
    for impl in reversed(hook.get_hookimpls()):  # pluggy calls the last registered first
        try:
            found: Any = impl.function(context=ctx)
        except Exception as exc:  # a plugin's bug is a finding, not a crash
            checks.append(Check(f"plugin {impl.plugin_name}", False,
                                f"its doctor check failed: {type(exc).__name__}: {exc}"))
            continue
        checks.extend(c for c in found or () if isinstance(c, Check))
    return checks


def run_checks(ctx: Context) -> list[Check]:
    checks = [check_mode(ctx), check_config(ctx.repo),
              _guarded("identity", lambda: check_identity(ctx)),
              _guarded("hooks", lambda: check_hooks(ctx)),
              _guarded("plugins", lambda: check_plugins(ctx))]
    return checks + plugin_checks(ctx)
