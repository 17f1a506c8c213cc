"""The conflict prompt of ``orc lock acquire|run`` and ``orc run`` on a terminal, and the lines
a waiter shows while it waits.

The prompt takes a letter or a digit (``w``/``1`` wait, ``f``/``2`` force, ``c``/``3`` cancel, in
any case, or the whole word); Enter waits, the harmless choice.  Force is offered only when the
locker does not say it would refuse it (a member on the team server: ``can_force`` is False);
its line then says that it needs an admin.  End of input cancels.  After a grant whose last
holder left commits this checkout lacks, :func:`ask_merge` offers to fetch and merge them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from orc_git.cli.answer import fallback_note
from orc_git.cli.output import Output, ago, describe, paint
from orc_git.handover import Head
from orc_git.locking.base import Locker
from orc_git.locking.info import LockInfo, readable_time
from orc_git.text import printable

WAIT, FORCE, CANCEL = "wait", "force", "cancel"
_ANSWERS = {"": WAIT, "1": WAIT, "w": WAIT, "wait": WAIT,
            "2": FORCE, "f": FORCE, "force": FORCE,
            "3": CANCEL, "c": CANCEL, "cancel": CANCEL, "q": CANCEL}


def ask(info: LockInfo, force_allowed: bool) -> str:
    """Show who holds ``info``'s task and read a choice from stdin: WAIT, FORCE or CANCEL."""
    err = sys.stderr
    print(paint(f"Task {info.task_id} is currently locked", "1;31", err), file=err)
    for line in describe(info)[1:4]:
        print(printable(line), file=err)
    force = ("  2. Force unlock (may corrupt task state)          f" if force_allowed else
             "  2. Force unlock: needs the admin role on the team server (not offered)")
    print(f"\nOptions:\n  1. Wait and retry automatically when available   w, Enter\n{force}\n"
          "  3. Cancel                                         c\n", file=err)
    choices = "w/f/c or 1/2/3" if force_allowed else "w/c or 1/3"
    while True:
        print(f"Your choice [{choices}, Enter = wait]: ", end="", file=err, flush=True)
        line = sys.stdin.readline()
        if not line:
            print(file=err)
            return CANCEL
        answer = _ANSWERS.get(line.strip().lower())
        if answer == FORCE and not force_allowed:
            print("force needs the admin role on the team server; ask an admin, or wait",
                  file=err)
        elif answer is not None:
            return answer


def waiting_lines(out: Output, task: str, locker: Locker | None = None
                  ) -> Callable[[LockInfo, float], None]:
    """What a waiter shows: a progress line redrawn in place on a terminal; otherwise (a script,
    a log) one line on stderr naming the holder, and another only when the holder changes.
    Both say when the answer comes from the file leases only (``locker`` in fallback)."""
    shown: list[object] = [None]

    def show(info: LockInfo, waited: float) -> None:
        note = fallback_note(locker) if locker is not None else ""
        if sys.stderr.isatty():
            out.progress(f"waiting for {task}: held by {info.who()}, last activity "
                         f"{ago(info.heartbeat_at)} ({waited:.0f} s){note}")
            return
        holder = (info.owner, info.pid, info.token)
        if holder != shown[0]:
            shown[0] = holder
            out.warn(f"waiting for {task}: held by {info.who()} (token {info.token}) since "
                     f"{readable_time(info.acquired_at)}{note}")

    return show


def ask_merge(head: Head) -> bool:
    """Offer to fetch and merge what the last holder left; Enter accepts, end of input or
    anything but yes declines (the run then goes ahead behind, as without a terminal)."""
    what = f"{head.branch} ({head.short})" if head.branch else f"commit {head.short}"
    while True:
        print(f"Fetch and merge {what} into this checkout first? [Y/n] ", end="",
              file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            print(file=sys.stderr)
            return False
        answer = line.strip().lower()
        if answer in ("", "y", "yes"):
            return True
        if answer in ("n", "no"):
            return False
