"""One base exception, structured subclasses, and the only place they meet exit codes.

Every failure a user can cause or meet is an :class:`OrcError`; the CLI prints its message
(or its JSON form) and exits with :attr:`OrcError.exit_code`.  Anything else escaping is a bug.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orc_git.handover import Head
    from orc_git.locking.info import LockInfo

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_FAILURE = 3
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130


class OrcError(Exception):
    """Base of every expected failure. ``code`` is the stable string scripts match on."""

    exit_code = EXIT_FAILURE
    code = "FAILURE"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


class UsageError(OrcError):
    exit_code = EXIT_USAGE
    code = "USAGE"


class InvalidInput(UsageError):
    code = "INVALID_INPUT"


class NotARepository(UsageError):
    code = "NOT_A_REPOSITORY"


class ConfigError(OrcError):
    code = "CONFIG_ERROR"


class StorageError(OrcError):
    """The filesystem refused: a full disk, read-only, permissions, a directory for a file."""

    code = "IO_ERROR"


class UnsafePath(StorageError):
    """A path orc would read or write is a symbolic link (inside a repository orc never follows
    one), or not the kind of file or directory it must be (a FIFO, a device).  Its code stays
    ``IO_ERROR``, as scripts already matched it for a linked task directory."""


class PluginMissing(OrcError):
    code = "PLUGIN_MISSING"


class LockerUnavailable(OrcError):
    """The lock service could not be reached: the one failure a CompositeLocker falls back on."""

    code = "UNAVAILABLE"


class Refused(OrcError):
    exit_code = EXIT_REFUSED
    code = "REFUSED"


class LockHeld(Refused):
    """Another holder has the lease. ``lock`` says who, so callers can show or wait on it."""

    code = "LOCK_HELD"

    def __init__(self, message: str, lock: LockInfo | None = None) -> None:
        super().__init__(message)
        self.lock = lock


class Cancelled(LockHeld):
    """The person at the conflict prompt chose to cancel: a refusal (exit 1, as DESIGN's table
    has it), said as plain narration on stderr rather than as an error, since nothing failed."""

    narrated = True


class GuardBusy(LockHeld):
    """Another process has held a task's guard too long (stopped mid-update?)."""


class Behind(Refused):
    """The last holder of a task left commits this checkout's ``HEAD`` lacks, and the latest
    was required (``--require-latest``, ``lock.require_latest``) or could not be merged.
    ``head`` is what they left (:class:`orc_git.handover.Head`)."""

    code = "BEHIND"

    def __init__(self, message: str, head: Head | None = None) -> None:
        super().__init__(message)
        self.head = head


class NotOwner(Refused):
    code = "NOT_OWNER"

    def __init__(self, message: str, lock: LockInfo | None = None) -> None:
        super().__init__(message)
        self.lock = lock


class LeaseLost(Refused):
    """The holder's lease was taken over, stolen or removed while it thought it held it."""

    code = "LEASE_LOST"


class StateUnreadable(OrcError):
    """A task's committed ``state.yaml`` or ``task.yaml`` cannot be read or makes no sense."""

    code = "STATE_UNREADABLE"


class GitFailed(OrcError):
    code = "GIT_FAILED"


class StaleToken(Refused):
    """A state write under a fencing token older than the one recorded: its writer lost the
    lease."""

    code = "STALE_TOKEN"


class MergeConflict(Refused):
    """``orc merge-state`` cannot decide: a side is not a readable state; git's conflict stays."""

    code = "MERGE_CONFLICT"


class Conflict(Refused):
    """A versioned write (a team server's shared resource) started from a version that is no
    longer the current one: nothing was saved."""

    code = "CONFLICT"


class NotFound(Refused):
    """What was asked for does not exist (a shared resource, or one of its versions)."""

    code = "NOT_FOUND"


class CommandNotRunnable(OrcError):
    """``orc lock run`` could not start its command: 127 not found, 126 not executable, as the
    shell, ``env`` and ``timeout`` say it."""

    code = "COMMAND_NOT_RUNNABLE"

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class TimedOut(OrcError):
    exit_code = EXIT_TIMEOUT
    code = "TIMEOUT"


class Interrupted(OrcError):
    exit_code = EXIT_INTERRUPTED
    code = "INTERRUPTED"
