"""What a shim written before the move calls; the same hook runner (:mod:`orc_git.githooks.run`)."""

from orc_git.githooks.run import main

__all__ = ["main"]
