"""orc-git: coordinate AI task runs between the people and processes sharing a git repository.

Importing this package does nothing but define names; the submodules load on first use, so solo
mode and git hooks pay only for what they touch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from orc_git.context import Context
    from orc_git.errors import Behind, LeaseLost, LockHeld, OrcError
    from orc_git.executor.api import run_context
    from orc_git.lease import Lease, hold
    from orc_git.locking.info import LockEvent, LockInfo
    from orc_git.plugin.hookspecs import hookimpl
    from orc_git.state import set_state

__all__ = ["Behind", "Context", "Lease", "LeaseLost", "LockEvent", "LockHeld", "LockInfo",
           "OrcError", "hold", "hookimpl", "run_context", "set_state"]

_LAZY = {
    "Behind": "orc_git.errors", "Context": "orc_git.context", "LeaseLost": "orc_git.errors",
    "LockHeld": "orc_git.errors",
    "OrcError": "orc_git.errors", "hookimpl": "orc_git.plugin.hookspecs", "Lease": "orc_git.lease",
    "hold": "orc_git.lease", "LockEvent": "orc_git.locking.info",
    "LockInfo": "orc_git.locking.info", "set_state": "orc_git.state",
    "run_context": "orc_git.executor.api",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'orc_git' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function (``orc_git.hold`` in a loop)
    return value
