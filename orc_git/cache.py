"""Small JSON caches under ``$ORC_HOME/cache``, each valid while the facts it was made from are.

Hooks run on every checkout within a time budget that ``import yaml`` and scanning installed
distributions for plugins would each take a good part of (figures: ``docs/benchmarks.md``).  A
cache entry stores its key (file
stamps, ``sys.path`` directory stamps) and is used only when the key still matches; a cache that
cannot be read or written is simply not used.
"""

from __future__ import annotations

import json
import os
from contextlib import suppress
from typing import Any

from orc_git import safefs
from orc_git.home import orc_home


def _path(name: str) -> str:
    return os.path.join(orc_home(), "cache", name.replace(os.sep, "%") + ".json")


MAX_BYTES = 4 << 20


def get(name: str, key: Any) -> Any:
    """The cached value, or ``None``; a cache file that is not a regular file (a FIFO would
    block) or not JSON is not used."""
    try:
        raw = safefs.read_regular(_path(name), MAX_BYTES, follow=True)
        if raw is None or len(raw) > MAX_BYTES:
            return None
        entry = json.loads(raw)
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    return entry.get("value")


def put(name: str, key: Any, value: Any) -> None:
    path = _path(name)
    try:
        text = json.dumps({"key": key, "value": value})
    except (TypeError, ValueError):
        return  # not JSON (a YAML date, say): parse it each time instead
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | safefs.O_NOFOLLOW
                     | safefs.O_CLOEXEC, 0o644)
        with open(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError:
        with suppress(OSError):
            os.unlink(tmp)


def file_key(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_mtime_ns, st.st_size]
