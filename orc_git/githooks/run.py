"""What every hook shim runs: ``main([hook, *git's arguments])`` with git's stdin.

post-checkout, post-merge and post-rewrite report and never fail the git command: whatever goes
wrong (a broken state file, a missing git, a bug) they exit 0, and they print nothing when there
is nothing to say.  pre-commit, pre-push and pre-run decide: 0 go, 1 refused.  Arguments missing
from git (the pre-commit framework passes none) are taken from pre-commit's environment variables.
"""

from __future__ import annotations

import os
import sys

POST_HOOKS = ("post-checkout", "post-merge", "post-rewrite")
PRE_HOOKS = ("pre-commit", "pre-push", "pre-run")


def _args_from_pre_commit(hook: str, args: list[str]) -> list[str]:
    env = os.environ.get
    if hook == "post-checkout" and not args and env("PRE_COMMIT_TO_REF"):
        return [env("PRE_COMMIT_FROM_REF", ""), env("PRE_COMMIT_TO_REF", ""),
                env("PRE_COMMIT_CHECKOUT_TYPE", "1")]
    if hook == "post-merge" and not args and env("PRE_COMMIT_IS_SQUASH_MERGE"):
        return [env("PRE_COMMIT_IS_SQUASH_MERGE", "0")]
    if hook == "post-rewrite" and not args and env("PRE_COMMIT_REWRITE_COMMAND"):
        return [env("PRE_COMMIT_REWRITE_COMMAND", "")]
    if hook == "pre-push" and not args and env("PRE_COMMIT_REMOTE_NAME"):
        return [env("PRE_COMMIT_REMOTE_NAME", ""), env("PRE_COMMIT_REMOTE_URL", "")]
    return args


def _say(lines: list[str]) -> None:
    if lines:
        from orc_git.text import printable

        sys.stderr.write("".join(f"orc: {printable(line)}\n" for line in lines))
        sys.stderr.flush()


def main(argv: list[str]) -> int:
    if not argv:
        _say(["usage: python -m orc_git.githooks.run HOOK [ARG...]"])
        return 2
    hook, args = argv[0], _args_from_pre_commit(argv[0], argv[1:])
    if os.environ.get("ORC_HOOKS") == "0":
        return 0
    if hook in POST_HOOKS:
        try:
            from orc_git.githooks.report import post_hook_report

            _say(post_hook_report(hook, args, sys.stdin))
        except BaseException as exc:  # a report must never fail the git command
            if isinstance(exc, KeyboardInterrupt):
                return 0
            from orc_git.errors import OrcError

            why = exc.message if isinstance(exc, OrcError) else f"{type(exc).__name__}: {exc}"
            _say([f"{hook} report skipped: {why}"])
        return 0
    if hook in PRE_HOOKS:
        from orc_git.errors import OrcError
        from orc_git.githooks import checks

        try:
            code, lines = checks.run(hook, args, sys.stdin)
        except OrcError as exc:
            code, lines = (0 if hook != "pre-run" else exc.exit_code), [exc.message]
        _say(lines)
        return code
    _say([f"unknown hook {hook!r}; orc-git handles {', '.join(POST_HOOKS + PRE_HOOKS)}"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
