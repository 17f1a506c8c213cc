"""Only for hook shims installed by orc-git before the git hooks moved to
:mod:`orc_git.githooks`: they call ``orc_git.hooks.run.main``, and without this module they would
silently do nothing until ``orc hooks install`` is run again.  Add nothing here."""
