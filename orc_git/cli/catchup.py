"""After a grant: is this checkout behind what the last holder left, and what to do about it.

``orc lock acquire|run`` and ``orc run`` warn (and say it in ``--json`` as ``behind``), refuse
with ``--require-latest`` (or ``lock.require_latest``), and on a terminal offer to fetch and
merge the last holder's branch first: ``git fetch`` and ``git merge``, a fast-forward or a
merge commit, never a reset.  A merge that fails is left as git leaves it, and the command
stops (exit 1, ``BEHIND``) with the lease given back.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from orc_git.cli import prompt
from orc_git.cli.output import Output
from orc_git.context import Context
from orc_git.errors import Behind
from orc_git.handover import Handover, Head, behind_message
from orc_git.locking.info import LockInfo


def behind_json(head: Head | None) -> dict[str, Any] | None:
    """DESIGN's ``"behind": {commit, branch, by}``; None (JSON null) when not behind."""
    return None if head is None else {"commit": head.commit, "branch": head.branch,
                                      "by": head.by}


def add_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--require-latest", action="store_true",
                   help="refuse (exit 1, BEHIND) when the last holder left commits this "
                        "checkout's HEAD lacks")


def catch_up(ctx: Context, out: Output, args: argparse.Namespace, info: LockInfo,
             release: Callable[[], object]) -> Head | None:
    """What the last holder left that this checkout still lacks after the choices made here
    (None: nothing); ``release`` gives the lease back when the command stops."""
    behind = ctx.handover.behind(info.last_head)
    if behind is None:
        return None
    message = behind_message(args.task, behind)
    if getattr(args, "require_latest", False) or ctx.config.require_latest:
        release()
        args.failure_fields = {**(getattr(args, "failure_fields", None) or {}),
                               "behind": behind_json(behind)}
        raise Behind(f"{message}; refused: the latest is required (--require-latest or "
                     "lock.require_latest), and the lease was given back", behind)
    if not out.json and sys.stdin.isatty() and sys.stderr.isatty():
        out.warn(message)
        if prompt.ask_merge(behind):
            try:
                merge(ctx.handover, behind)
            except Behind as exc:
                release()
                args.failure_fields = {**(getattr(args, "failure_fields", None) or {}),
                                       "behind": behind_json(behind)}
                raise Behind(f"{exc.message}; the lease was given back", behind) from None
            still = ctx.handover.behind(behind)
            if still is None:
                out.say(f"merged {behind.branch or behind.short}: this checkout now has "
                        f"{behind.short}")
                return None
        return behind
    out.warn(message)
    return behind


def _git(handover: Handover, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], cwd=handover.worktree, capture_output=True,
                              text=True, errors="replace", timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        raise Behind(f"cannot run git {args[0]}: {exc}") from None


def _known(handover: Handover, commit: str) -> bool:
    return _git(handover, "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0


def merge(handover: Handover, head: Head) -> None:
    """Fetch ``head``'s branch when its commit is not here yet, then merge the commit itself
    (what the last holder had, whatever the branch has become since)."""
    if not _known(handover, head.commit):
        remote, _, name = (head.branch or "").partition("/")
        remotes = _git(handover, "remote").stdout.split()
        if not name or remote not in remotes:
            raise Behind(f"commit {head.short} is not in this repository and "
                         f"{head.branch or 'its detached HEAD'} names no remote to fetch it "
                         "from; fetch it by hand")
        done = _git(handover, "fetch", "--", remote, name)
        if done.returncode != 0:
            raise Behind(f"git fetch {remote} {name} failed: {done.stderr.strip()[:300]}")
        if not _known(handover, head.commit):
            raise Behind(f"commit {head.short} is not on {head.branch} (force-pushed away?); "
                         "nothing was merged")
    by = head.by or "the last holder"
    done = _git(handover, "merge", "--no-edit", "-m",
                f"Merge {head.branch or head.short} ({head.short}), left by {by}", head.commit)
    if done.returncode != 0:
        said = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise Behind(f"merging {head.branch or head.short} ({head.short}) failed: "
                     f"{' / '.join(said)[:400]}; the repository is left as git left it "
                     "(resolve and commit, or `git merge --abort`)")
