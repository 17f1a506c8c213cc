"""Which plugin hooks are implemented, remembered between runs without importing any plugin.

A git hook that only needs to know "does any plugin add report lines?" must not pay for pluggy
and for scanning installed distributions on every checkout (``docs/benchmarks.md``).  On the git
hook path: the plugin manager (and pluggy) is imported only when the cache misses.
"""

from __future__ import annotations

import os
import sys

from orc_git import cache


def _environment_key() -> list[object]:
    """What decides which plugins are installed and which hooks exist: the interpreter, its
    path's directories, and the core's hookspecs file (a core that gained a hook must ask
    again, even in an editable install whose site-packages did not change)."""
    # sys.path[0] is the script's directory or the working directory, never an install place.
    specs = os.path.join(os.path.dirname(__file__), "hookspecs.py")
    return [sys.executable, cache.file_key(specs),
            [[p, cache.file_key(p)] for p in sys.path[1:] if p and os.path.isdir(p)]]


def implemented_hooks() -> set[str]:
    """The ``orc_git_*`` hooks some installed plugin implements, remembered while the installed
    distributions are unchanged, so a git hook can skip plugin discovery (and pluggy) entirely
    when no plugin wants to take part."""
    key = _environment_key()
    hit = cache.get("plugins", key)
    if isinstance(hit, list):
        return set(hit)
    from orc_git.plugin.manager import BUILTIN, load_plugins

    plugins = load_plugins()
    hooks = {impl_hook for name, plugin in plugins.manager.list_name_plugin()
             if name != BUILTIN
             for impl_hook in dir(plugin) if impl_hook.startswith("orc_git_")}
    cache.put("plugins", key, sorted(hooks))
    return hooks
