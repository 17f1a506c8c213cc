"""One run of a task under its lease: ``state.yaml`` and the events, from start to end.

``orc run`` and :func:`orc_git.run_context` both drive a :class:`RunSession`: ``begin`` (state
``running``), ``started`` (``task.started``, presence ``active``), any number of events, then
``finish`` (``task.completed`` / ``task.failed``, state ``completed`` / ``failed``, presence
``online``), ``close`` (the sink's bounded delivery, still holding the lease), then the lease's
release by the caller.

State writes are fenced by the lease's token (:func:`orc_git.state.write_state`).  A task without
a ``state.yaml`` is created (``task.yaml`` + ``state.yaml``, as ``orc task new`` does) in p2p and
team mode, so a run is always recorded; in solo mode (no files written) only an existing state
is kept current.  A failing state write is said on stderr and never stops the run; once the
lease is lost, the state is left to the new holder.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from orc_git.executor.publisher import Publisher
from orc_git.publish import EventSink, NullSink, TaskEvent

if TYPE_CHECKING:
    from orc_git.context import Context
    from orc_git.lease import Lease

log = logging.getLogger("orc_git.run")

PROJECT_SOURCE = "--project"


def configured_project(ctx: Context) -> str | None:
    value = ctx.config.get("team.project")
    return str(value) if value not in (None, "") else None


def use_project(ctx: Context, project: str | None) -> str | None:
    """The run's project: ``project`` (``--project``), else config ``team.project``, else None.

    A given project is written into the context's config as ``team.project`` before any locker
    is made: the team locker sends that with every lock, so project subscribers see the run's
    ``lock.*`` events too, and the team sink reads the same key.  That is the whole plumbing; the
    Locker protocol does not change."""
    if project is None or project == configured_project(ctx):
        return configured_project(ctx) if project is None else project
    team = ctx.config.data.get("team")
    if not isinstance(team, dict):
        team = ctx.config.data["team"] = {}
    team["project"] = project
    ctx.config.sources["team.project"] = PROJECT_SOURCE
    return project


def _sink_and_hook(ctx: Context) -> tuple[EventSink, Any]:
    """The mode's sink (hook ``orc_git_event_sink``; none answers in solo and p2p) and the
    ``orc_git_task_event`` hook caller, or None when nobody implements it.  Solo mode asks the
    plugin index first, so it loads no plugin when none takes part."""
    if ctx.mode == "solo":
        from orc_git.plugin.index import implemented_hooks

        if not implemented_hooks() & {"orc_git_event_sink", "orc_git_task_event"}:
            return NullSink(), None
    hooks = ctx.plugins.manager.hook
    sink: EventSink | None = None
    try:
        sink = hooks.orc_git_event_sink(context=ctx)
    except Exception as exc:
        log.warning("a plugin failed to provide the event sink (%s); the run goes on without "
                    "publishing", exc)
    task_hook = hooks.orc_git_task_event if hooks.orc_git_task_event.get_hookimpls() else None
    return sink if sink is not None else NullSink(), task_hook


class RunSession:
    def __init__(self, ctx: Context, lease: Lease, project: str | None = None) -> None:
        self.ctx = ctx
        self.lease = lease
        self.task_id = lease.task_id
        self.project_id = use_project(ctx, project)
        sink, hook = _sink_and_hook(ctx)
        self.publisher = Publisher(self.task_id, self.project_id, sink, hook)
        self._record = True  # keep state.yaml current
        self._began = time.monotonic()
        self.finished = False

    @property
    def token(self) -> int | None:
        return self.lease.token

    # -- state.yaml ------------------------------------------------------------------------

    def _write_state(self, status: str | None, phase: str | None = None) -> None:
        if not self._record:
            return
        if self.lease.lost:  # the task is someone else's now: its state is theirs
            log.warning("%s: state.yaml not updated (%s): the lease was lost", self.task_id,
                        status or f"phase {phase}")
            return
        from orc_git.errors import OrcError
        from orc_git.state import write_state

        try:
            write_state(self.ctx, self.task_id, status=status, phase=phase,
                        token=self.lease.token, lock_domain=self.lease.domain)
        except OrcError as exc:
            log.warning("%s: state.yaml not updated: %s", self.task_id, exc.message)
        except Exception as exc:  # the run matters more than its record
            log.warning("%s: state.yaml not updated: %r", self.task_id, exc)

    def _ensure_task(self) -> None:
        from orc_git.errors import OrcError
        from orc_git.state import create_task, read_state

        try:
            if read_state(self.ctx.repo.tasks_dir, self.task_id) is not None:
                return
            if self.ctx.mode == "solo":
                self._record = False  # solo writes no files of its own accord
                return
            create_task(self.ctx, self.task_id)
        except OrcError as exc:
            log.warning("%s: state.yaml not updated: %s", self.task_id, exc.message)
            self._record = False

    # -- the run ---------------------------------------------------------------------------

    def begin(self) -> None:
        """Just before the work starts: ``state.yaml`` says ``running``."""
        self._began = time.monotonic()
        self._ensure_task()
        self._write_state("running")

    def started(self, command: str, pid: int | None) -> None:
        self.publisher.event("task.started", {"command": command,
                                              "host": self.ctx.identity.host, "pid": pid})
        self.publisher.presence("active", self.task_id)

    def publish(self, event_type: str, payload: dict[str, Any]) -> TaskEvent:
        """An executor's own event (``task.phase``…); a ``task.phase`` with a text ``phase``
        also records the phase in ``state.yaml``."""
        event = self.publisher.event(event_type, payload)
        phase = payload.get("phase")
        if event_type == "task.phase" and isinstance(phase, str):
            self._write_state(None, phase)
        return event

    def finish(self, exit_code: int, signal_name: str | None = None,
               error: str | None = None) -> None:
        """``task.completed`` (exit 0) or ``task.failed``, the final state, presence
        ``online``.  Called once; the lease is still held, so the state write is fenced."""
        if self.finished:
            return
        self.finished = True
        payload: dict[str, Any] = {"exit_code": exit_code,
                                   "duration_s": round(time.monotonic() - self._began, 3)}
        ok = exit_code == 0 and signal_name is None and error is None
        if signal_name is not None:
            payload["signal"] = signal_name
        if error is not None:
            payload["error"] = error
        self.publisher.event("task.completed" if ok else "task.failed", payload)
        self._write_state("completed" if ok else "failed")
        self.publisher.presence("online", None)

    def close(self) -> None:
        """Before the lease is released: let the sink deliver for a bounded time.  While the
        run still holds the lease the server takes its events (after a release, another
        holder's lease would make them FORBIDDEN), and they get offsets before the release's
        ``lock.released``, so the team's feed reads started … completed, then unlocked."""
        self.publisher.close()
