"""``orc init``, ``orc mode`` and ``orc plugins``: setting a repository up and saying how it is."""

from __future__ import annotations

import argparse
import errno
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

from orc_git import safefs
from orc_git.cli import plugininstall
from orc_git.cli.output import Output
from orc_git.config import MODES, Config, load_config
from orc_git.context import TEAM_INSTALL_HINT, Context
from orc_git.errors import StorageError, UnsafePath, UsageError
from orc_git.repo import find_repo

SHARED_CONFIG = """\
# orc-git team defaults, committed with the repository (personal overrides: .orc/local/config.yaml)
mode: {mode}
lock:
  ttl: 60        # seconds a lease lives without a heartbeat
  heartbeat: 10  # seconds between heartbeats (never more than ttl / 3)
"""


def add_parsers(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("init", help="create .orc/ and merge the .gitignore lines")
    p.add_argument("--mode", choices=MODES, default="p2p",
                   help="p2p (default) writes .orc/shared/config.yaml so the mode travels with "
                        "the repository")
    p.add_argument("--server-url", help="team server base URL, e.g. ws://127.0.0.1:8765")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("mode", help="the resolved mode, and why")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_mode)

    p = sub.add_parser("plugins", help="discovered plugins and their versions")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_plugins)
    plugininstall.add_parser(p)


def gitignore_lines() -> list[str]:
    text = resources.files("orc_git").joinpath("templates/gitignore").read_text("utf-8")
    return text.splitlines()


MAX_FILE_BYTES = 1 << 20


def _unsafe(path: Path, exc: OSError) -> StorageError:
    if exc.errno in (errno.ELOOP, errno.EINVAL, errno.ENXIO):  # a link, not a regular file
        return UnsafePath(f"{path}: {exc.strerror}; refusing to write through it")
    return StorageError(f"cannot write {path}: {exc.strerror or exc}")


def merge_gitignore(path: Path) -> list[str]:
    """Append the template's missing lines; idempotent, and never reorders the user's lines.
    A ``.gitignore`` that is a link (a clone may commit one pointing anywhere) or not a regular
    file is refused, never appended through."""
    try:
        fd = safefs.open_regular(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
    except OSError as exc:
        raise _unsafe(path, exc) from None
    try:
        try:
            raw = safefs.read_fd(fd, MAX_FILE_BYTES)
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror}") from None
        current = raw.decode("utf-8", "replace")
        have = {line.strip() for line in current.splitlines()}
        template = gitignore_lines()
        missing = [line for line in template if line.strip() and not line.startswith("#")
                   and line.strip() not in have]
        if not missing:
            return []
        header = [template[0]] if template and template[0] not in have else []
        prefix = "" if not current or current.endswith("\n") else "\n"
        data = (prefix + "\n".join(header + missing) + "\n").encode("utf-8")
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return missing


def _read_config_text(path: Path) -> str | None:
    try:
        raw = safefs.read_regular(path, MAX_FILE_BYTES)
    except OSError as exc:
        raise _unsafe(path, exc) from None
    return None if raw is None else raw.decode("utf-8", "replace")


def _write_config_text(path: Path, text: str) -> None:
    """Replace the shared config atomically, inside its real directory (never through a link)."""
    try:
        fd = safefs.open_dir(path.parent)
        try:
            safefs.replace_at(fd, path.name, text.encode("utf-8"))
        finally:
            os.close(fd)
    except OSError as exc:
        raise _unsafe(path, exc) from None


def _switch_mode(path: Path, old: str, mode: str, server_url: str | None) -> bool:
    """``orc init --mode X`` on a repository set up before: change the ``mode:`` (and
    ``server_url:``) lines of the shared config in place, keeping every other line."""
    new = (re.sub(r"(?m)^mode:.*$", f"mode: {mode}", old, count=1)
           if re.search(r"(?m)^mode:", old) else f"mode: {mode}\n{old}")
    if server_url:
        if re.search(r"(?m)^[ \t]+server_url:", new):
            new = re.sub(r"(?m)^([ \t]+)server_url:.*$",
                         lambda m: f"{m.group(1)}server_url: {server_url}", new, count=1)
        elif re.search(r"(?m)^team:[ \t]*$", new):
            new = re.sub(r"(?m)^team:[ \t]*$", lambda m: f"team:\n  server_url: {server_url}",
                         new, count=1)
        else:
            sep = "" if not new or new.endswith("\n") else "\n"
            new += f"{sep}team:\n  server_url: {server_url}\n"
    if new == old:
        return False
    _write_config_text(path, new)
    return True


def cmd_init(args: argparse.Namespace, out: Output) -> int:
    if args.server_url and args.mode != "team":
        raise UsageError("--server-url goes with --mode team")
    repo = find_repo()
    if args.mode == "team" and not args.server_url and not load_config(repo).get(
            "team.server_url"):
        raise UsageError("team mode needs the team server's URL: give `--server-url "
                         "ws://HOST:8765`, or run `orc team login URL` first (it stores the URL "
                         "and your token in ~/.orc/config.yaml)")
    created = []
    try:
        for d in (repo.orc_dir, repo.lock_root, repo.local_dir):
            if not d.is_dir():
                d.mkdir(parents=True, exist_ok=True)
                created.append(str(d))
        shared_config = repo.shared_dir / "config.yaml"
        if args.mode != "solo":
            repo.shared_dir.mkdir(parents=True, exist_ok=True)
            text = SHARED_CONFIG.format(mode=args.mode)
            if args.server_url:
                text += f"team:\n  server_url: {args.server_url}\n"
            old = _read_config_text(shared_config)
            if old is None:
                _write_config_text(shared_config, text)
                created.append(str(shared_config))
            elif _switch_mode(shared_config, old, args.mode, args.server_url):
                out.say(f"set mode: {args.mode} in {shared_config}")
            else:
                out.say(f"kept the existing {shared_config}")
    except OSError as exc:
        raise StorageError(f"cannot create orc files: {exc.strerror} ({exc.filename})") from None
    added = merge_gitignore(repo.worktree / ".gitignore")
    ctx = Context.discover()
    out.mode = ctx.mode
    for path in created:
        out.say(f"created {os.path.relpath(path)}")
    if added:
        out.say(f"added {len(added)} line(s) to .gitignore")
    out.say(f"mode: {ctx.mode} ({ctx.mode_reason})")
    if ctx.mode != args.mode:
        out.warn(f"you asked for {args.mode}, but the mode is {ctx.mode}: {ctx.mode_reason}")
    if ctx.mode == "team" and not ctx.plugins.manager.hook.orc_git_locker.get_hookimpls()[:-1]:
        out.warn(TEAM_INSTALL_HINT)
    out.result({"initialized": True, "created": created, "gitignore_added": added})
    return 0


def cmd_mode(args: argparse.Namespace, out: Output) -> int:
    ctx = Context.discover()
    out.mode = ctx.mode
    out.line(ctx.mode)
    out.say(f"because {ctx.mode_reason}")
    problems = team_setup_problems(ctx.config) if ctx.mode == "team" else []
    for problem in problems:
        out.warn(problem)
    if ctx.mode == "team":
        out.say("`orc doctor` checks the team server, your token and the rest of the setup")
    out.result({"reason": ctx.mode_reason, "problems": problems})
    return 0


def team_setup_problems(config: Config) -> list[str]:
    """What ``orc mode`` can tell about team mode without the network (``orc doctor`` asks the
    server): a missing URL or token."""
    problems = []
    if not config.get("team.server_url"):
        problems.append("no team server URL is configured: `orc team login URL` or "
                        "ORC_TEAM_URL")
    if not config.get("team.token"):
        problems.append("no team token is configured: `orc team login URL` stores one")
    return problems


def cmd_plugins(args: argparse.Namespace, out: Output) -> int:
    from orc_git.plugin.manager import load_plugins  # pluggy: only commands that need plugins

    try:
        out.mode = Context.discover().mode
    except Exception:
        out.mode = None
    records = load_plugins().records
    for r in records:
        state = f"FAILED: {r.error}" if r.error else "ok"
        out.row(r.name, f"{r.distribution or '?'} {r.version or '?'}", state)
    out.result({"plugins": [{"name": r.name, "distribution": r.distribution,
                             "version": r.version, "error": r.error} for r in records]})
    return 0
