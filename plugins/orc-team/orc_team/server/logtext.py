"""Log lines that a client cannot forge, and notices that a flood cannot multiply.

Everything a client chooses (user ids, names, paths, headers, close reasons, exception texts)
goes through :func:`clean` before it reaches a log line: a newline, an ESC sequence or a bidi
override in it would otherwise print a fake line, recolour the operator's terminal or reorder
what they read.  :class:`SafeFormatter` applies the same rule to every record the server's log
handler writes, aiohttp's included, and indents the lines of a traceback, so that no client text
can ever start a line of its own.  :class:`Throttle` reports a repeated condition (descriptors
exhausted, handshakes timed out, bad requests) once per interval with a count of the repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError
from orc_git.text import printable

RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
INTERVAL = 10.0


def clean(value: object, limit: int | None = 200) -> str:
    """``value`` as text for a log line: cut to ``limit`` characters, then every character that
    is not printable shown escaped, by the rule orc prints everything with
    (:func:`orc_git.text.printable`).  Printable text, the usual case, comes back unchanged."""
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return printable(text)


class SafeFormatter(logging.Formatter):
    """Each record as one line of printable text; a traceback's lines follow it indented by
    ``  | `` (so a newline inside an exception's message cannot start a line either)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = clean(record.message, None)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return _indent(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indent(super().formatStack(stack_info))


def _indent(text: str) -> str:
    return "\n".join("  | " + clean(line, None) for line in text.splitlines())


class Throttle:
    """At most one line per key and interval: the first occurrence is logged at once, the
    repeats within the interval are counted and reported in one line when it ends."""

    def __init__(self, logger: logging.Logger, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._repeats: dict[str, tuple[int, str]] = {}

    def warn(self, key: str, message: str, *args: object) -> None:
        if self.due(key, message, *args):
            self.logger.warning(message, *args)

    def due(self, key: str, message: str, *args: object) -> bool:
        """True when this occurrence is to be logged now (the caller logs it); else it is
        counted, for the line that ends the interval."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            count, _ = self._repeats.get(key, (0, ""))
            if not count:
                self._schedule(key, last + self.interval - now)
            self._repeats[key] = (count + 1, message % args)
            return False
        self._last[key] = now
        return True

    def _schedule(self, key: str, delay: float) -> None:
        # Without a running loop (a unit test) the repeats wait for the next flush.
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().call_later(max(delay, 0.0), self.flush, key)

    def flush(self, key: str) -> None:
        """Report the repeats counted for ``key``, if any, and start a new interval."""
        count, latest = self._repeats.pop(key, (0, ""))
        if count:
            self._last[key] = self._clock()
            self.logger.warning("%d more in the last %gs; the latest: %s", count,
                                self.interval, latest)


class BadRequestFilter(logging.Filter):
    """For the logger aiohttp's request handler writes to: a request aiohttp could not parse
    (an oversized header, a malformed line) becomes one short throttled line without a
    traceback, and never with the request's bytes, which may hold a token."""

    def __init__(self, throttle: Throttle) -> None:
        super().__init__()
        self.throttle = throttle

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        self.throttle.warn("bad-request", "bad request from %s: %s (HTTP %s)", clean(peer),
                           type(exc).__name__, exc.code or 400)
        return False


def loop_exception_handler(throttle: Throttle) -> Callable[[asyncio.AbstractEventLoop,
                                                            dict[str, Any]], None]:
    """The event loop's exception handler.  asyncio reports a failed ``accept()`` here, once
    per attempt and with a traceback: out of descriptors, that was thousands of tracebacks a
    second (asyncio's accept loop retries at once, up to the listen backlog).  Those become one
    line per interval; asyncio itself retries accepting every second, so the server recovers
    as soon as descriptors are free again.  Anything else is logged as the loop would, but
    at most once per interval and kind."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
            throttle.warn("accept", "cannot accept connections: %s (the open-file limit is "
                          "reached); retrying every second", exc.strerror or exc)
            return
        message = clean(context.get("message") or "event loop error")
        if isinstance(exc, ValueError) and "_start_serving" in message:
            # One of those retries (asyncio schedules dozens) found the listener closed:
            # the server is shutting down while out of descriptors.  Nothing is wrong.
            throttle.logger.debug("accept retry after the listener closed: %s", clean(exc))
            return
        if throttle.due(f"loop:{type(exc).__name__}:{message[:60]}", "%s: %s", message,
                        clean(exc)):
            throttle.logger.error("%s", message,
                                  exc_info=exc if isinstance(exc, BaseException) else None)

    return handle
