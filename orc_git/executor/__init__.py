"""The executor: run a task's work under its lease and publish what the run does.

``orc run`` (:mod:`orc_git.cli.runcmd`) and :func:`orc_git.run_context` share one path,
:class:`~orc_git.executor.session.RunSession`: hold the lease, keep ``state.yaml`` current, make
the events (``task.started``, ``task.transcript``, ``task.completed`` / ``task.failed``) and hand
them to the mode's sink.  Submodules load on first use, like the rest of the package.
"""
