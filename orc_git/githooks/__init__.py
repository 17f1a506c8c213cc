"""orc-git's git hooks: ``install`` puts the shims where git runs them (and chains the hooks that
were there), ``run`` is what a shim calls, ``report`` and ``checks`` are what the hooks say and
decide.  Kept apart from the rest of the package so a hook imports only what it needs: hooks run
on every checkout, and their time budget is a few tens of milliseconds."""
