"""``orc_git.run_context``: the executor API for work that is not a command.

    with orc_git.run_context("TASK-001", project="acme") as run:
        run.publish("task.phase", {"phase": "plan"})
        work(fencing_token=run.token)
        run.check()            # raises LeaseLost if the lease was taken over meanwhile

The block holds the task's lease exactly as :func:`orc_git.hold` does (the same code), and runs
the same :class:`~orc_git.executor.session.RunSession` as ``orc run``: ``state.yaml`` goes
``running`` → ``completed`` / ``failed``, ``task.started`` is published at entry and
``task.completed`` at a normal exit, ``task.failed`` (``exit_code`` 1, ``error``) when the block
raises, and the exception goes on up.  Publishing never raises into the block.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import TYPE_CHECKING, Any

from orc_git.lease import Holding, LostCallback

if TYPE_CHECKING:
    from types import TracebackType

    from orc_git.context import Context
    from orc_git.executor.session import RunSession
    from orc_git.lease import Lease
    from orc_git.publish import TaskEvent


class Run:
    """What ``with run_context(...) as run`` gives: the lease and the run's publisher.  Publish
    from one thread at a time (the events of a run are one ordered stream)."""

    def __init__(self, session: RunSession) -> None:
        self._session = session
        self.lease: Lease = session.lease
        self.task_id = session.task_id
        self.project_id = session.project_id

    @property
    def token(self) -> int | None:
        """The lease's fencing token (None in solo mode)."""
        return self.lease.token

    def publish(self, event_type: str, payload: dict[str, Any] | None = None) -> TaskEvent:
        """Publish one event of this run (``task.phase``, ``task.iteration``…); a
        ``task.phase`` with a ``phase`` also records it in ``state.yaml``."""
        return self._session.publish(event_type, dict(payload or {}))

    def transcript(self, role: str, content: str) -> None:
        """Publish one transcript line (cut like ``orc run``'s)."""
        from orc_git.executor.lines import transcript_text

        lines = [transcript_text(line.encode("utf-8", "surrogatepass"))
                 for line in content.split("\n")]
        self._session.publisher.transcript(role, lines)

    def check(self) -> None:
        """Raise :class:`orc_git.LeaseLost` if the lease is known to be lost."""
        self.lease.check()


class RunContext:
    """The context manager :func:`run_context` returns."""

    def __init__(self, task_id: str, project: str | None, ttl: int | None, wait: bool,
                 timeout: float | None, on_lost: LostCallback | None,
                 repo: str | os.PathLike[str] | None, context: Context | None) -> None:
        self._task_id, self._project = task_id, project
        self._ttl, self._wait, self._timeout, self._on_lost = ttl, wait, timeout, on_lost
        self._repo, self._context = repo, context
        self._holding: Holding | None = None
        self._session: RunSession | None = None

    def _ctx(self) -> Context:
        from orc_git.context import Context, default_context
        from orc_git.executor.session import configured_project

        if self._context is not None:
            return self._context
        ctx = default_context(self._repo)
        if self._project is not None and self._project != configured_project(ctx):
            # Locks must carry this project: a context of its own, so the shared default one
            # (used by hold()) keeps its configured project.
            ctx = Context.discover(self._repo)
        return ctx

    def __enter__(self) -> Run:
        from orc_git.executor.session import RunSession, use_project

        ctx = self._ctx()
        use_project(ctx, self._project)
        holding = Holding(self._task_id, self._wait, self._timeout, self._ttl, self._on_lost,
                          self._repo, ctx)
        lease = holding.__enter__()
        try:
            session = RunSession(ctx, lease, self._project)
            session.begin()
            session.started(shlex.join(getattr(sys, "orig_argv", sys.argv)), os.getpid())
        except BaseException:
            holding.__exit__(None, None, None)
            raise
        self._holding, self._session = holding, session
        return Run(session)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        session, holding = self._session, self._holding
        if session is None or holding is None:
            return
        self._session = self._holding = None
        try:
            if exc is None or (isinstance(exc, SystemExit) and exc.code in (0, None)):
                session.finish(0)
            else:
                code, signal_name = _status(exc)
                session.finish(code, signal_name, error=_describe(exc))
        finally:
            try:
                session.close()  # delivered while still the holder: see RunSession.close
            finally:
                holding.__exit__(None, None, None)


def _status(exc: BaseException) -> tuple[int, str | None]:
    if isinstance(exc, KeyboardInterrupt):
        return 130, "SIGINT"
    if isinstance(exc, SystemExit):
        return (exc.code if isinstance(exc.code, int) else 1), None
    return 1, None


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= 500 else text[:500] + "..."


def run_context(task_id: str, *, project: str | None = None, ttl: int | None = None,
                wait: bool = False, timeout: float | None = None,
                on_lost: LostCallback | None = None,
                repo: str | os.PathLike[str] | None = None,
                context: Context | None = None) -> RunContext:
    """Hold ``task_id``'s lease and publish the run for the length of a ``with`` block (see the
    module docstring).  ``project`` (default: config ``team.project``) is the project of the
    run's events and, in team mode, of its lock; with an explicit ``context`` it is written into
    that context's config."""
    return RunContext(task_id, project, ttl, wait, timeout, on_lost, repo, context)
