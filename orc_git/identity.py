"""Who is asking: the person (user, names) and the process that holds a lease.

A *holder* is one process on one machine: ``(host_id, pid, pid_started)``.  A second process of the
same user is another holder; a reused PID is told apart by its start time.  ``host_id`` adds the
boot time and PID namespace to the host name, so two containers that share a name and a volume never
judge each other's PIDs.  Process facts come from psutil, imported only when a lease needs them.
"""

from __future__ import annotations

import functools
import getpass
import os
import subprocess

from orc_git.config import Config
from orc_git.text import clipped

MAX_NAME = 128
"""The most characters of any identity field (user, display name, email, initials, host) that
orc writes into a lease or a state file, after :func:`~orc_git.text.clipped` escaped what is not
printable; more is cut, ending in ``…``.  Far inside what lease readers accept (512, so even
``owner`` = user@host fits), so a holder's own lease always reads back as its own."""


def _name(value: str | None) -> str | None:
    return clipped(value, MAX_NAME) if value else None


class Identity:
    """The person. Names missing from the config come from ``git config`` on first use only,
    so commands that never write a lease never run git.  Every field is made printable and cut
    to :data:`MAX_NAME` here, once, whoever built the identity: leases and states carry them."""

    def __init__(self, user: str, display_name: str | None = None, email: str | None = None,
                 initials: str | None = None, host: str = "", from_git: bool = False) -> None:
        self.user = clipped(user, MAX_NAME)
        self.host = clipped(host, MAX_NAME)
        self._names = (display_name, email, initials)
        self._from_git = from_git

    @functools.cached_property
    def _resolved(self) -> tuple[str | None, str | None, str | None]:
        display, email, initials = self._names
        if self._from_git:
            display = display or _git_config("user.name")
            email = email or _git_config("user.email")
        display = _name(display)
        if initials is None and display:
            initials = "".join(part[0] for part in display.split()[:3]).upper() or None
        return display, _name(email), _name(initials)

    @property
    def display_name(self) -> str | None:
        return self._resolved[0]

    @property
    def email(self) -> str | None:
        return self._resolved[1]

    @property
    def initials(self) -> str | None:
        return self._resolved[2]

    @property
    def owner(self) -> str:
        return f"{self.user}@{self.host}"


class Holder:
    """A process holding (or about to hold) leases.  Its start time and host id need psutil,
    so they are looked up on first use: reading leases that nobody holds never imports it."""

    def __init__(self, identity: Identity, pid: int) -> None:
        self.identity = identity
        self.pid = pid

    @classmethod
    def for_process(cls, identity: Identity, pid: int | None = None) -> Holder:
        return cls(identity, os.getpid() if pid is None else pid)

    @functools.cached_property
    def pid_started(self) -> float:
        return process_start_time(self.pid) or 0.0

    @functools.cached_property
    def host_id(self) -> str:
        return host_id()


@functools.cache
def hostname() -> str:
    # gethostname() without importing socket; escaped and cut like every identity field
    return clipped(os.uname().nodename or "localhost", MAX_NAME)


@functools.cache
def host_id() -> str:
    import psutil

    try:
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        pidns = 0
    return f"{hostname()}/{int(psutil.boot_time())}/{pidns}"


def process_start_time(pid: int) -> float | None:
    """Start time of a live process, or None when it is gone (zombies count as gone)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return round(proc.create_time(), 2)
    except psutil.NoSuchProcess:
        return None
    except (psutil.AccessDenied, OSError):
        return -1.0  # alive but not ours to inspect


def process_alive(pid: int, started: float) -> bool:
    now = process_start_time(pid)
    if now is None:
        return False
    return now < 0 or abs(now - started) < 1.0


def _git_config(key: str) -> str | None:
    try:
        out = subprocess.run(["git", "config", "--get", key], capture_output=True,
                             encoding="utf-8", errors="backslashreplace", timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def identity_from(config: Config) -> Identity:
    section = config.section("identity")

    def text(key: str) -> str | None:
        value = section.get(key)
        return str(value) if value not in (None, "") else None

    return Identity(text("user") or _default_user(), text("display_name"), text("email"),
                    text("initials"), hostname(), from_git=True)


def _default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"
