"""What a run publishes: task events, and the sink that takes them (the spec's publisher).

The core makes the events (``orc run``, :func:`orc_git.run_context`) and hands each to the sink
that a plugin provides for the mode (hook ``orc_git_event_sink``); without one (solo, p2p) the
events only shape ``state.yaml``.  A sink's contract is the spec's first principle: publishing
never waits on the network and never fails the run.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class TaskEvent:
    """One event as its publisher made it; the server adds user, timestamp and offset.
    ``event_id`` travels with it everywhere, so a re-sent event is recognised as the same."""

    event_type: str
    task_id: str
    payload: dict[str, Any]
    project_id: str | None = None
    event_id: str = field(default_factory=_new_id)
    made_at: float = field(default_factory=time.time)


class EventSink(Protocol):
    """Where a mode's events go.  ``publish`` returns once the events are durable locally (or
    the sink has told the user, once, that it cannot keep them); it never waits on a server."""

    def publish(self, events: Sequence[TaskEvent]) -> None:
        """Keep ``events`` in one durable write (a chatty command's read of many lines is one
        call), in order."""
        ...

    def presence(self, status: str, task_id: str | None) -> None:
        """Say what the user is doing (``active`` on ``task_id``, ``online``); best effort."""
        ...

    def close(self, timeout: float) -> None:
        """Deliver what can be delivered within ``timeout`` seconds; the rest stays queued
        for the next command that connects."""
        ...


class NullSink:
    """The sink of solo and p2p mode: nobody to tell."""

    def publish(self, events: Sequence[TaskEvent]) -> None:
        pass

    def presence(self, status: str, task_id: str | None) -> None:
        pass

    def close(self, timeout: float) -> None:
        pass
