"""Where orc keeps a user's own files (the user config, caches, the team server's store):
``~/.orc``, or ``$ORC_HOME`` when it is set (tests and benchmarks point it elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path


def orc_home() -> Path:
    home = os.environ.get("ORC_HOME")
    return Path(home) if home else Path.home() / ".orc"
