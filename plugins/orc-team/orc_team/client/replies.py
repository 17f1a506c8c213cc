"""Requests waiting for their replies, matched by ``id`` (the server answers each id once).

Separate from the connection so its rules are plain: a reply ends its request; a request whose
connection is lost fails at once with the reason; a request that timed out is remembered for a
while, so that its reply, should it still come, is handed to ``on_late`` instead of vanishing (a
``lock`` granted after the caller gave up must be given back).  Waiting is the client's business:
it shares its condition with this table, which notifies it whenever a request ends.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from typing import Any

from orc_git.errors import OrcError

from orc_team.protocol import ERROR, INTERNAL

Message = dict[str, Any]

MAX_ABANDONED = 256


class ServerError(OrcError):
    """An ``error`` reply: the server understood the request and refused it.  Never a reason to
    fall back to the file lease; the locker maps the codes that mean something to a holder."""

    code = "SERVER_ERROR"

    def __init__(self, server_code: str, message: str) -> None:
        super().__init__(f"the team server answered {server_code}: {message}")
        self.server_code = server_code
        self.server_message = message


class Pending:
    __slots__ = ("conn", "error", "id", "reply", "task_id", "type")

    def __init__(self, req_id: str, type_: str, conn: object, task_id: str | None) -> None:
        self.id = req_id
        self.type = type_
        self.conn = conn
        self.task_id = task_id
        self.reply: Message | None = None
        self.error: OrcError | None = None

    @property
    def done(self) -> bool:
        return self.reply is not None or self.error is not None

    def result(self) -> Message:
        """The reply, or the error it ended with (ServerError for an ``error`` reply)."""
        if self.error is not None:
            raise self.error
        reply = self.reply
        assert reply is not None
        if reply.get("type") == ERROR:
            error = reply.get("data") or {}
            raise ServerError(str(error.get("code", INTERNAL)), str(error.get("message", "")))
        return reply


class Replies:
    def __init__(self, changed: threading.Condition) -> None:
        self._changed = changed
        self._pending: dict[str, Pending] = {}
        self._abandoned: OrderedDict[str, str] = OrderedDict()
        self._ids = itertools.count(1)

    def open(self, type_: str, conn: object, task_id: str | None = None) -> Pending:
        pending = Pending(f"r{next(self._ids)}", type_, conn, task_id)
        with self._changed:
            self._pending[pending.id] = pending
        return pending

    def in_flight(self, task_id: str) -> bool:
        """Is a request about ``task_id`` still waiting for its reply?"""
        with self._changed:
            return any(p.task_id == task_id for p in self._pending.values())

    def cancel(self, pending: Pending) -> None:
        with self._changed:
            self._pending.pop(pending.id, None)

    def waiting(self) -> bool:
        """Is any request waiting for its reply?  Call with the condition held."""
        return bool(self._pending)

    def abandon(self, pending: Pending) -> bool:
        """For a request that timed out: True if it ended after all; else False, and a reply
        coming later is a *late* one."""
        with self._changed:
            if self._pending.pop(pending.id, None) is None:
                return True  # answered between the timeout and this lock
            self._abandoned[pending.id] = pending.type
            while len(self._abandoned) > MAX_ABANDONED:
                self._abandoned.popitem(last=False)
        return False

    def deliver(self, message: Message) -> str | None:
        """Route a message with an ``id``: "reply", "late", or None (not a reply of ours)."""
        key = str(message.get("id"))
        with self._changed:
            pending = self._pending.pop(key, None)
            if pending is not None:
                pending.reply = message
                self._changed.notify_all()
                return "reply"
            return "late" if self._abandoned.pop(key, None) is not None else None

    def fail(self, conn: object, error: OrcError) -> None:
        """End every request sent on ``conn`` (a lost connection) with ``error``."""
        with self._changed:
            for pending in [p for p in self._pending.values() if p.conn is conn]:
                del self._pending[pending.id]
                pending.error = error
            self._changed.notify_all()
