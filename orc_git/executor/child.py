"""Run CMD with its output passing through us byte for byte, and each read also handed on as
transcript lines.

**Pipes or ptys.**  Each of CMD's stdout and stderr gets a pty when ours is a terminal, and a pipe
otherwise, so CMD sees exactly the ``isatty()`` it would see without orc: colours, progress bars
and line buffering stay as the user knows them, and ``orc run … | less`` still gets plain,
block-buffered output.  Two ptys (not one for both) keep stdout and stderr apart, on the
terminal and in the transcript's ``role``.  The ptys only carry output: CMD keeps our stdin and
our controlling terminal (so Ctrl-C, job control and ``/dev/tty`` prompts work as before); their
output processing is off (no ``\\n`` → ``\\r\\n``), so bytes arrive as CMD wrote them; their
window size follows ours (SIGWINCH).  The price: CMD's output takes one more hop, and a program
that asks its stdout for the terminal's modes (rare) sees the pty's, not the real terminal's.

**Passing bytes on.**  Every read (at most 64 KiB) is written to our fd at once, before it is
parsed, with no buffering in between.  If our stdout is gone (``orc run … | head``), we stop
reading that stream so CMD meets the closed pipe as it would without orc.

**Signals.**  SIGTERM is forwarded to CMD; so is SIGINT, unless it came from Ctrl-C at the
terminal whose foreground job we share with CMD, which has delivered it to CMD already
(:func:`_terminal_sent_it`).

**The end.**  Output ends at EOF on both streams.  A grandchild that keeps a stream open after CMD
exits (``cmd &``) does not keep orc waiting: once CMD is reaped, a stream quiet for
:data:`DRAIN_GRACE` seconds is closed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from orc_git.errors import CommandNotRunnable
from orc_git.executor.lines import LineSplitter

READ_SIZE = 65536
DRAIN_GRACE = 0.5
"""Seconds of silence after CMD exited before a stream a grandchild still holds is abandoned."""

Lines = Callable[[str, list[str]], None]


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    """CMD's status, or 128 + N when signal N killed it (as a shell says it)."""
    signal_name: str | None = None


def _pty_pair(like_fd: int) -> tuple[int, int]:
    """A pty for output only: raw output processing, the window size of ``like_fd``."""
    import pty
    import termios

    master, slave = pty.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST  # oflag: write bytes as they are
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    _copy_winsize(like_fd, slave)
    return master, slave


def _copy_winsize(src: int, dst: int) -> None:
    import fcntl
    import termios

    with contextlib.suppress(OSError):
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


class _Stream:
    __slots__ = ("fd", "out", "role", "splitter", "tty", "writable")

    def __init__(self, role: str, out: int, fd: int, tty: bool) -> None:
        self.role, self.out, self.fd, self.tty = role, out, fd, tty
        self.splitter = LineSplitter()
        self.writable = True


def _write_all(fd: int, data: bytes) -> bool:
    """Write every byte (a non-blocking fd waits until writable); False once the reader is
    gone."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            import select

            select.select([], [fd], [])
            continue
        except (BrokenPipeError, OSError) as exc:
            if isinstance(exc, BrokenPipeError) or exc.errno in (errno.EPIPE, errno.EBADF,
                                                                 errno.EIO):
                return False
            raise
        view = view[n:]
    return True


def spawn(argv: list[str], out_fd: int = 1, err_fd: int = 2) -> tuple[subprocess.Popen[bytes],
                                                                       list[_Stream]]:
    """Start CMD with a pty or a pipe for each output (see the module docstring)."""
    streams: list[_Stream] = []
    child_ends: list[int] = []
    try:
        for role, ours in (("stdout", out_fd), ("stderr", err_fd)):
            if _isatty(ours):
                master, slave = _pty_pair(ours)
                streams.append(_Stream(role, ours, master, True))
                child_ends.append(slave)
            else:
                read, write = os.pipe()
                streams.append(_Stream(role, ours, read, False))
                child_ends.append(write)
        try:
            child = subprocess.Popen(argv, stdout=child_ends[0], stderr=child_ends[1])
        except FileNotFoundError:
            raise CommandNotRunnable(f"command not found: {argv[0]}", 127) from None
        except PermissionError:
            raise CommandNotRunnable(f"command not executable: {argv[0]}", 126) from None
        except OSError as exc:
            raise CommandNotRunnable(f"cannot run {argv[0]}: {exc.strerror}", 126) from None
    except BaseException:
        for s in streams:
            os.close(s.fd)
        for fd in child_ends:
            os.close(fd)
        raise
    for fd in child_ends:  # CMD has them: EOF comes when it (and what inherited them) is done
        os.close(fd)
    return child, streams


def pump(child: subprocess.Popen[bytes], streams: list[_Stream], on_lines: Lines) -> Outcome:
    """Pass CMD's output through, hand each read's lines to ``on_lines(role, lines)``, forward
    SIGINT/SIGTERM to CMD while it runs, and return how it ended."""

    def forward(signum: int, frame: object) -> None:
        if signum == signal.SIGINT and _terminal_sent_it(child.pid):
            return
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    def winch(signum: int, frame: object) -> None:
        for s in streams:
            if s.tty and s.fd >= 0:
                _copy_winsize(s.out, s.fd)  # a pty's size is set through its master

    handled = [signal.SIGINT, signal.SIGTERM]
    previous = {s: signal.signal(s, forward) for s in handled}
    if any(s.tty for s in streams):
        previous[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, winch)
    try:
        _read_until_done(child, streams, on_lines)
        while True:
            try:
                code = child.wait()
                break
            except KeyboardInterrupt:
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for s in streams:
            if s.fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(s.fd)
    if code < 0:
        return Outcome(128 - code, signal.Signals(-code).name)
    return Outcome(code)


def _terminal_sent_it(pid: int) -> bool:
    """Did a SIGINT to us most likely come from Ctrl-C at our terminal, which sent it to CMD as
    well?  So when CMD is in our process group and that group is the foreground job of our
    controlling terminal: forwarding it too would make one Ctrl-C two (and many programs, AI
    agents among them, take a second Ctrl-C as "quit now").  Otherwise (no terminal, a
    background job, CMD in a group of its own) the signal came from ``kill`` and is forwarded.
    The same rule as ``uv run``; a ``kill -INT`` of a foreground ``orc run`` is the case it
    gets wrong (CMD then still has Ctrl-C and SIGTERM)."""
    try:
        if os.getpgid(pid) != os.getpgrp():
            return False
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:  # no controlling terminal (ENXIO), CMD gone
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def _read_until_done(child: subprocess.Popen[bytes], streams: list[_Stream],
                     on_lines: Lines) -> None:
    sel = selectors.DefaultSelector()
    by_fd = {s.fd: s for s in streams}
    for s in streams:
        sel.register(s.fd, selectors.EVENT_READ, s)
    pidfd = -1
    with contextlib.suppress(AttributeError, OSError):
        pidfd = os.pidfd_open(child.pid)  # type: ignore[attr-defined,unused-ignore]
        sel.register(pidfd, selectors.EVENT_READ, None)
    exited = False
    try:
        while by_fd:
            timeout = DRAIN_GRACE if exited else (None if pidfd >= 0 else 0.1)
            ready = sel.select(timeout)
            if not ready and exited:
                break  # a grandchild holds the streams: stop here
            if pidfd < 0 and not exited and child.poll() is not None:
                exited = True
            for key, _ in ready:
                stream = key.data
                if stream is None:  # the pidfd: CMD has exited
                    sel.unregister(pidfd)
                    exited = True
                    continue
                try:
                    data = os.read(stream.fd, READ_SIZE)
                except OSError as exc:  # EIO: a pty's slave side is closed everywhere
                    if exc.errno != errno.EIO:
                        raise
                    data = b""
                if not data:
                    sel.unregister(stream.fd)
                    del by_fd[stream.fd]
                    on_lines(stream.role, stream.splitter.flush())
                    continue
                if stream.writable and not _write_all(stream.out, data):
                    stream.writable = False  # our reader is gone: so is CMD's
                    sel.unregister(stream.fd)
                    del by_fd[stream.fd]
                    os.close(stream.fd)
                    stream.fd = -1
                on_lines(stream.role, stream.splitter.feed(data))
        for s in by_fd.values():  # abandoned after the grace: their last partial line
            on_lines(s.role, s.splitter.flush())
    finally:
        sel.close()
        if pidfd >= 0:
            os.close(pidfd)
