"""Make a run's events and hand them on: to the mode's sink, and (all but transcripts) to the
``orc_git_task_event`` hook.

Seeing a run must never slow or break it (the spec's first principle), so a sink or a hook
implementation that raises is said once on stderr (the ``orc_git.run`` logger, which the CLI
prints as ``orc: …``).  A sink that raised is then left out for the rest of the run: its
contract is to never raise, so it is broken, and retrying it on every output line would repeat
the failure thousands of times.  The hook is still called (other plugins listen on it too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from orc_git.publish import EventSink, NullSink, TaskEvent

log = logging.getLogger("orc_git.run")

TRANSCRIPT = "task.transcript"
CLOSE_TIMEOUT = 1.0
"""Seconds the end of a run gives the sink to deliver what is queued.  The events are already
durable (the outbox) and the next command that connects sends the rest, so the user should not
wait on the network after their command is done: one second covers a live server's round trips
and bounds the wait on one that accepts connections and never answers."""

TaskHook = Callable[..., Any]


class Publisher:
    def __init__(self, task_id: str, project_id: str | None, sink: EventSink,
                 task_hook: TaskHook | None = None) -> None:
        self.task_id = task_id
        self.project_id = project_id
        self.sink = sink
        self._hook = task_hook
        self._hook_failed = False

    def _sink_failed(self, what: str, exc: Exception) -> None:
        log.warning("publishing %s's events failed (%s: %s); the run goes on without "
                    "publishing", self.task_id, what, exc)
        self.sink = NullSink()

    def make(self, event_type: str, payload: dict[str, Any]) -> TaskEvent:
        return TaskEvent(event_type, self.task_id, payload, self.project_id)

    def publish(self, events: Sequence[TaskEvent]) -> None:
        """One sink call (one durable write) for ``events``; the task-event hook hears each
        event that is not a transcript line."""
        if not events:
            return
        try:
            self.sink.publish(events)
        except Exception as exc:
            self._sink_failed("publish", exc)
        if self._hook is not None:
            for event in events:
                if event.event_type != TRANSCRIPT:
                    self._tell_hook(event)

    def event(self, event_type: str, payload: dict[str, Any]) -> TaskEvent:
        event = self.make(event_type, payload)
        self.publish((event,))
        return event

    def transcript(self, role: str, lines: list[str]) -> None:
        """One read's lines as one batch."""
        if lines:
            task, project = self.task_id, self.project_id
            self.publish([TaskEvent(TRANSCRIPT, task, {"role": role, "content": line}, project)
                          for line in lines])

    def _tell_hook(self, event: TaskEvent) -> None:
        assert self._hook is not None
        try:
            self._hook(event={"event_type": event.event_type, "task_id": event.task_id,
                              "project_id": event.project_id, "event_id": event.event_id,
                              "payload": event.payload})
        except Exception as exc:
            if not self._hook_failed:  # said once; the hook is still called (others listen)
                self._hook_failed = True
                log.warning("a plugin failed handling %s's %s event: %s", self.task_id,
                            event.event_type, exc)

    def presence(self, status: str, task_id: str | None) -> None:
        try:
            self.sink.presence(status, task_id)
        except Exception as exc:
            self._sink_failed("presence", exc)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        try:
            self.sink.close(timeout)
        except Exception as exc:
            self._sink_failed("close", exc)
